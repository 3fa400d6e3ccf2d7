"""Hooked recurrent models: configs, mixers, the language model and the sequence-to-sequence model."""

from workbench.models.cache import RecurrentCache, memory_budget, set_memory_budget
from workbench.models.config import MIXER_FAMILIES, RecurrentConfig
from workbench.models.edits import Edit, EditError
from workbench.models.hooked import HookedRecurrentSeq2Seq
from workbench.models.language_model import HookedLanguageModel, HookedRecurrentLM
from workbench.models.recurrence import PositionWiseHook, ReadOnlyHook, position_wise, read_only

__all__ = [
    "Edit",
    "EditError",
    "MIXER_FAMILIES",
    "HookedLanguageModel",
    "HookedRecurrentLM",
    "HookedRecurrentSeq2Seq",
    "PositionWiseHook",
    "RecurrentCache",
    "ReadOnlyHook",
    "RecurrentConfig",
    "memory_budget",
    "position_wise",
    "read_only",
    "set_memory_budget",
]

"""Hooked recurrent models: configs, mixers, the language model and the sequence-to-sequence model."""

from workbench.models.cache import RecurrentCache, memory_budget, set_memory_budget
from workbench.models.config import MIXER_FAMILIES, RecurrentConfig
from workbench.models.hooked import HookedRecurrentSeq2Seq
from workbench.models.language_model import HookedLanguageModel, HookedRecurrentLM
from workbench.models.recurrence import ReadOnlyHook, read_only

__all__ = [
    "MIXER_FAMILIES",
    "HookedLanguageModel",
    "HookedRecurrentLM",
    "HookedRecurrentSeq2Seq",
    "RecurrentCache",
    "ReadOnlyHook",
    "RecurrentConfig",
    "memory_budget",
    "read_only",
    "set_memory_budget",
]

"""One mixer per recurrent family, each with the hook quantities of the hook table of docs/design.md."""

from workbench.models.mixers.base import Mixer
from workbench.models.mixers.classic import ElmanMixer, GRUMixer, LSTMMixer
from workbench.models.mixers.minimal import MinGRUMixer, MinLSTMMixer
from workbench.models.mixers.s6 import S6Mixer

MIXERS: dict[str, type[Mixer]] = {
    "elman": ElmanMixer,
    "lstm": LSTMMixer,
    "gru": GRUMixer,
    "mingru": MinGRUMixer,
    "minlstm": MinLSTMMixer,
    "s6": S6Mixer,
}

__all__ = ["MIXERS", "Mixer", "ElmanMixer", "LSTMMixer", "GRUMixer", "MinGRUMixer",
           "MinLSTMMixer", "S6Mixer"]

"""Planted models: small networks with hand-set weights whose answer is known, shared by the analyses,
their tests and the notebooks (cells: Karpathy et al. 2015; lens: Belrose et al. 2023; steering:
Rimsky et al. 2024)."""

from workbench.analysis.planted.cells import PLANTED_CELLS, planted_lstm
from workbench.analysis.planted.lens import planted_affine_lm
from workbench.analysis.planted.steering import (
    COMMENT_CELL,
    COMMENT_DIRECTION,
    LOGIT_GAIN,
    planted_steering_lstm,
)
from workbench.analysis.tokens import printable_tokenizer

__all__ = [
    "COMMENT_CELL",
    "COMMENT_DIRECTION",
    "LOGIT_GAIN",
    "PLANTED_CELLS",
    "planted_affine_lm",
    "planted_lstm",
    "planted_steering_lstm",
    "printable_tokenizer",
]

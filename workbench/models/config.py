"""Configuration of a hooked recurrent model: a small dataclass, saved as JSON beside the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

MixerFamily = Literal["elman", "lstm", "gru", "mingru", "minlstm", "s6"]
MIXER_FAMILIES: tuple[str, ...] = ("elman", "lstm", "gru", "mingru", "minlstm", "s6")


@dataclass
class RecurrentConfig:
    """Shape of a `HookedRecurrentLM` (token model) or `HookedRecurrentSeq2Seq` (vector model).

    `d_model` is the residual width, `d_hidden` the recurrent width of each mixer (LSTM/GRU/Elman
    units, minGRU/minLSTM hidden size, S6 `d_inner`). `d_vocab` is used by the language model,
    `d_input`/`d_output` by the sequence-to-sequence model.
    """

    family: str = "lstm"
    n_layers: int = 2
    d_model: int = 128
    d_hidden: int = 128
    d_vocab: int = 0
    d_input: int = 0
    d_output: int = 0
    d_mlp: int = 0  # 0: no MLP in the block
    norm: Literal["layernorm", "rmsnorm", "none"] = "layernorm"
    # S6 (Mamba) only
    d_state: int = 16
    d_conv: int = 4
    dt_rank: int = 0  # 0: ceil(d_model / 16), as in Mamba
    tie_embeddings: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in MIXER_FAMILIES:
            raise ValueError(
                f"unknown mixer family {self.family!r}; choose one of {', '.join(MIXER_FAMILIES)}"
            )
        for name in ("n_layers", "d_model", "d_hidden"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dt_rank == 0:
            self.dt_rank = max(1, -(-self.d_model // 16))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecurrentConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config has unknown fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

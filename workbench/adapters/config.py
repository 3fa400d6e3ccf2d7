"""`TransformersConfig`: an adapter's `model.cfg`, the shape summary analyses read from every hooked model.

The fields analyses read from a native `RecurrentConfig` (family, n_layers, d_model, d_hidden,
d_vocab, metadata) plus `sizes`, every dimension name the adapter's hook specs use, taken from the
wrapped `transformers` model's config when the adapter is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TransformersConfig:
    """Shape of a `HookedTransformersLM`. `d_hidden` is the mixer's inner width (`d_inner`) where the
    family has one, else `d_model`; `metadata["name"]` is the checkpoint's name or path, or None."""

    family: str
    n_layers: int
    d_model: int
    d_hidden: int
    d_vocab: int
    sizes: dict[str, int] = field(default_factory=dict)  # dimension name -> size, as the hook specs use them
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sizes(cls, family: str, n_layers: int, sizes: Mapping[str, int],
                   name: str | None = None) -> TransformersConfig:
        """The config of an adapter with `n_layers` blocks whose dimensions are `sizes`."""
        d_model = sizes["d_model"]
        return cls(family=family, n_layers=n_layers, d_model=d_model, d_hidden=sizes.get("d_inner", d_model),
                   d_vocab=sizes["d_vocab"], sizes=dict(sizes), metadata={"name": name or None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

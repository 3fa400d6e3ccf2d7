"""Gate saturation: how often each unit's gate is nearly shut or nearly open.

Karpathy, Johnson & Fei-Fei 2015, section 4.2 and Fig. 3: a gate value below 0.1 is
left-saturated, above 0.9 right-saturated; a forget gate right-saturated most of the time marks
a unit that integrates information over long spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.analysis.cells.recording import GATES, CellRecording, record, resolve_layers

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["GateSaturation", "gate_saturation", "saturation_fractions"]

LEFT, RIGHT = 0.1, 0.9  # the paper's thresholds


def saturation_fractions(
    gate: np.ndarray, low: float = LEFT, high: float = RIGHT
) -> tuple[np.ndarray, np.ndarray]:
    """gate [pos, units] -> (fraction of positions below `low`, fraction above `high`), each [units]."""
    gate = np.asarray(gate)
    if gate.ndim != 2 or gate.shape[0] == 0:
        raise ValueError(f"expected gate values [pos, units] with pos > 0, got {gate.shape}")
    if not low < high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    return (gate < low).mean(axis=0), (gate > high).mean(axis=0)


@dataclass
class GateSaturation:
    """Per (layer, gate): `left[(l, g)]` and `right[(l, g)]`, each [units], fractions of positions."""

    left: dict[tuple[int, str], np.ndarray]
    right: dict[tuple[int, str], np.ndarray]
    low: float = LEFT
    high: float = RIGHT
    n_positions: int = 0

    def rows(self) -> list[dict[str, Any]]:
        """One row per unit: layer, gate, unit, left, right (for a DataFrame)."""
        out = []
        for key, left in self.left.items():
            right = self.right[key]
            for unit, (a, b) in enumerate(zip(left.tolist(), right.tolist(), strict=True)):
                out.append({"layer": key[0], "gate": key[1], "unit": unit, "left": a, "right": b})
        return out

    def summary(self) -> list[dict[str, Any]]:
        """Per (layer, gate): mean fractions and how many units are mostly (> 50%) saturated."""
        out = []
        for key, left in self.left.items():
            right = self.right[key]
            out.append({
                "layer": key[0], "gate": key[1], "units": left.shape[0],
                "mean_left": float(left.mean()), "mean_right": float(right.mean()),
                "mostly_left": int((left > 0.5).sum()), "mostly_right": int((right > 0.5).sum()),
            })
        return out

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.rows())


def gate_saturation(
    model_or_recording: HookedModel | CellRecording,
    text: str | None = None,
    *,
    gates: str | Sequence[str] | None = None,
    layers: int | Sequence[int] | None = None,
    low: float = LEFT,
    high: float = RIGHT,
    tokenizer: Any = None,
    memory_budget_bytes: int | None = None,
) -> GateSaturation:
    """Saturation fractions of every unit of every gate (paper Fig. 3) over `text`.

    Pass a model and a text (only the gates are recorded), or a `CellRecording` that holds them.
    `gates` defaults to the family's sigmoid gates (LSTM i, f, o; GRU r, z; minGRU z; minLSTM f, i).
    """
    if isinstance(model_or_recording, CellRecording):
        rec = model_or_recording
        family = rec.family
        gate_list = _gates(family, gates)
        keys = [k for k in rec.keys if k[1] in gate_list]
        if layers is not None:
            wanted = {layers} if isinstance(layers, int) else set(layers)
            keys = [k for k in keys if k[0] in wanted]
        if not keys:
            raise ValueError(f"the recording holds none of the gates {gate_list}")
    else:
        model = model_or_recording
        if text is None:
            raise ValueError("pass a text to run the model on")
        gate_list = _gates(model.cfg.family, gates)
        rec = record(model, text, gate_list, resolve_layers(model, layers), tokenizer=tokenizer,
                     memory_budget_bytes=memory_budget_bytes)
        keys = rec.keys
    left, right = {}, {}
    for key in keys:
        left[key], right[key] = saturation_fractions(rec.values[key], low, high)
    return GateSaturation(left, right, low, high, len(rec))


def _gates(family: str, gates: str | Sequence[str] | None) -> list[str]:
    if gates is not None:
        return [gates] if isinstance(gates, str) else list(gates)
    found = GATES.get(family, ())
    if not found:
        with_gates = ", ".join(f for f, g in GATES.items() if g)
        raise ValueError(
            f"a {family or 'this'} model has no sigmoid gates to saturate (families with gates: "
            f"{with_gates}); pass gates=[...] to name quantities in [0, 1]"
        )
    return list(found)

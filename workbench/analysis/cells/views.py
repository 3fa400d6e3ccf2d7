"""One-call views that join recording, discovery and heatmaps: the pictures of the paper's Figs. 2, 4.

Karpathy, Johnson & Fei-Fei 2015 draw tanh(c) of one cell over a text; `cell_heatmap` does that
for any quantity of any unit, and `top_units_heatmap` draws the units discovery ranks best for a
feature, next to the feature itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.analysis.cells.discovery import CellDiscovery
from workbench.analysis.cells.features import FeatureSpec, compute_features
from workbench.analysis.cells.recording import GATES, CellRecording, record
from workbench.analysis.heatmap import TextHeatmap, heatmap_grid, text_heatmap

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["Unit", "cell_heatmap", "colour_range", "colour_scale", "top_units_heatmap", "unit_label", "unit_matrix"]



def colour_scale(quantity: str, family: str = "") -> dict[str, Any]:
    """Colour map and range for a quantity: gates 0..1 white-green, signed values blue-white-red."""
    if quantity in GATES.get(family, ()) or quantity in ("i", "f", "o", "r", "z"):
        return {"cmap": "sequential", "vmin": 0.0, "vmax": 1.0}
    return {"cmap": "diverging", "vmin": None, "vmax": None}


Unit = tuple[int, str, int]  # (layer, quantity, unit)


def unit_label(unit: Unit) -> str:
    """`L{layer} {quantity}[{unit}]`, as the heatmaps' tooltips name a unit."""
    layer, quantity, index = unit
    return f"L{layer} {quantity}[{index}]"


def unit_matrix(recording: CellRecording, units: Sequence[Unit], *, squash: bool = False) -> np.ndarray:
    """[n_units, pos] the values the heatmaps draw for each (layer, quantity, unit): the recorded
    activation, or tanh of it with `squash` (as Karpathy et al. draw tanh(c))."""
    if not units:
        raise ValueError("no units given: pass (layer, quantity, unit) triples")
    rows = np.stack([recording.unit(layer, quantity, index) for layer, quantity, index in units])
    return np.tanh(rows) if squash else rows  # [n_units, pos]


def colour_range(values: np.ndarray, quantity: str, family: str = "") -> tuple[float, float]:
    """(low, high) of the colour scale `cell_heatmap` uses for `values` of `quantity`: 0..1 for a
    gate, else symmetric around zero at the largest |value| (1 if there is none)."""
    scale = colour_scale(quantity, family)
    if scale["vmin"] is not None:
        return float(scale["vmin"]), float(scale["vmax"])
    finite = np.abs(values[np.isfinite(values)])
    bound = float(finite.max()) if finite.size else 1.0
    return -(bound or 1.0), bound or 1.0


def cell_heatmap(
    model_or_recording: HookedModel | CellRecording,
    text: str | None = None,
    layer: int = 0,
    quantity: str = "c",
    unit: int = 0,
    *,
    squash: bool = False,
    tokenizer: Any = None,
    memory_budget_bytes: int | None = None,
    wrap: int = 100,
) -> TextHeatmap:
    """Heatmap of one unit's `quantity` over the text (paper Fig. 2); `squash` draws tanh(value),
    as the paper draws tanh(c), so counters that grow without bound stay readable.
    """
    if isinstance(model_or_recording, CellRecording):
        rec = model_or_recording
    else:
        if text is None:
            raise ValueError("pass the text to run the model on")
        rec = record(model_or_recording, text, [quantity], [layer], tokenizer=tokenizer,
                     memory_budget_bytes=memory_budget_bytes)
    values = unit_matrix(rec, [(layer, quantity, unit)], squash=squash)[0]  # [pos]
    scale = colour_scale(quantity, rec.family)
    label = unit_label((layer, quantity, unit))
    return text_heatmap(rec.text, values, title=f"layer {layer} · {quantity} · unit {unit}",
                        label=f"{label}: ", wrap=wrap, **scale)


def top_units_heatmap(
    recording: CellRecording,
    discovery: CellDiscovery,
    feature: str,
    k: int = 3,
    *,
    features: Sequence[str] | Mapping[str, FeatureSpec] | None = None,
    window: tuple[int, int] | None = None,
    wrap: int = 80,
) -> TextHeatmap:
    """The feature itself and its `k` best units (by train |r|, held-out score in the title)."""
    spec = features if features is not None else [feature]
    if isinstance(spec, Mapping):
        spec = {feature: spec[feature]} if feature in spec else [feature]
    values = compute_features(recording.text, spec)[feature]
    start, stop = window if window is not None else (0, len(recording))
    columns = {f"feature: {feature}": values[start:stop]}
    for row in discovery.top(feature, k).itertuples():
        v = recording.unit(int(row.layer), str(row.quantity), int(row.unit))
        sign = -1.0 if row.train_r < 0 else 1.0  # flip anti-correlated units to read alike
        name = (f"L{row.layer} {row.quantity}[{row.unit}]  r_train={row.train_r:+.2f}  "
                f"held-out={row.score:+.2f}")
        columns[name] = sign * (v[start:stop] - np.median(v))
    return heatmap_grid(recording.text[start:stop], columns, wrap=wrap)

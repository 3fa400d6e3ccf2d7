"""CircuitsVis views of the workbench's token-level maps, for TransformerLens users (`pip install
recurrent-workbench[circuitsvis]`): the cell explorer's per-character activations as `ColoredTokens`
(one unit) or `ColoredTokensMulti` (several), and implicit-attention maps as `AttentionHeads`.

The numbers and colour ranges are those our own figures draw (`cells.views.unit_matrix`,
`colour_range`; `implicit_attention.figures.drawn_map`). The result shows CircuitsVis's bundled
JavaScript inline, so it renders offline; `cdn_src` is the short form that loads it from the web.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.analysis.cells.views import Unit, colour_range, unit_label, unit_matrix

if TYPE_CHECKING:
    from workbench.analysis.cells.recording import CellRecording
    from workbench.analysis.implicit_attention.api import ImplicitAttention

__all__ = ["CircuitsVisHTML", "attention_heads", "colored_tokens", "colored_tokens_multi", "require_circuitsvis"]

INSTALL_HINT = "pip install 'recurrent-workbench[circuitsvis]' (or pip install circuitsvis)"


def require_circuitsvis() -> Any:
    """The `circuitsvis` package, or an ImportError saying how to install it."""
    try:
        import circuitsvis
    except ImportError as error:
        raise ImportError(f"exporting to CircuitsVis needs the circuitsvis package: {INSTALL_HINT}") from error
    return circuitsvis


@dataclass(frozen=True)
class CircuitsVisHTML:
    """A rendered CircuitsVis view: Jupyter shows `local_src` (JavaScript inline, works offline);
    `props` are exactly the values handed to the CircuitsVis component."""

    component: str  # the CircuitsVis React component, e.g. "ColoredTokens"
    local_src: str
    cdn_src: str
    props: dict[str, Any] = field(repr=False)

    def _repr_html_(self) -> str:
        return self.local_src

    def __str__(self) -> str:
        return self.local_src

    def save(self, path: str | Path) -> Path:
        """Write a standalone HTML page (offline: the JavaScript is inline)."""
        path = Path(path)
        path.write_text(f"<!doctype html><meta charset='utf-8'><body>{self.local_src}</body>", encoding="utf-8")
        return path


def _rendered(component: str, rendered: Any, props: dict[str, Any]) -> CircuitsVisHTML:
    return CircuitsVisHTML(component, rendered.local_src, rendered.cdn_src, props)


def _tokens(recording: CellRecording) -> list[str]:
    """One token string per position: the recording's characters (the workbench's models read characters)."""
    return list(recording.text)


def colored_tokens(recording: CellRecording, layer: int, quantity: str, unit: int, *,
                   squash: bool = False) -> CircuitsVisHTML:
    """One unit's activation over the text as CircuitsVis `ColoredTokens`: the values and colour range
    of `cell_heatmap(recording, layer=layer, quantity=quantity, unit=unit, squash=squash)`."""
    circuitsvis = require_circuitsvis()
    values = unit_matrix(recording, [(layer, quantity, unit)], squash=squash)[0]  # [pos]
    low, high = colour_range(values, quantity, recording.family)
    props = {"tokens": _tokens(recording), "values": values.astype(np.float64).tolist(),
             "min_value": low, "max_value": high}
    return _rendered("ColoredTokens", circuitsvis.tokens.colored_tokens(**props), props)


def colored_tokens_multi(recording: CellRecording, units: Sequence[Unit], *,
                         squash: bool = False) -> CircuitsVisHTML:
    """Several units over the text as CircuitsVis `ColoredTokensMulti` (pick a unit to colour by):
    values [pos, n_units], the transpose of `units_heatmap_figure`'s z."""
    import torch

    circuitsvis = require_circuitsvis()
    matrix = unit_matrix(recording, list(units), squash=squash)  # [n_units, pos]
    values = torch.from_numpy(np.ascontiguousarray(matrix.T, dtype=np.float64))  # [pos, n_units]
    props = {"tokens": _tokens(recording), "values": values, "labels": [unit_label(u) for u in units]}
    return _rendered("ColoredTokensMulti", circuitsvis.tokens.colored_tokens_multi(**props), props)


def attention_heads(att: ImplicitAttention, tokens: Sequence[str], *, channels: Sequence[int] | None = None,
                    batch: int = 0) -> CircuitsVisHTML:
    """Implicit-attention maps as CircuitsVis `AttentionHeads` [heads, query, key].

    Without `channels`, one head: the map `map_figure(att)` draws (the aggregated map, or the mean over
    channels). With `channels` (indices into `att.channels`, per-channel maps only), one head per
    channel, as `map_figure(att, channel=c)` draws each. Entries above the diagonal (keys after the
    query) are 0 and masked; the colour range is the figure's, over all heads.
    """
    from workbench.analysis.implicit_attention.figures import drawn_map

    circuitsvis = require_circuitsvis()
    length = int(att.maps.shape[-1])
    if len(tokens) != length:
        raise ValueError(f"tokens: {len(tokens)} given for a map over {length} positions; give one per position")
    if [int(t) for t in att.queries] != list(range(length)):
        raise ValueError(
            f"att holds query rows {[int(t) for t in att.queries][:8]}{'...' if len(att.queries) > 8 else ''} "
            f"of {length}; CircuitsVis draws square [query, key] maps: compute it with queries=None"
        )
    if channels is not None and att.maps.ndim != 4:
        raise ValueError(f"channels= needs per-channel maps; these are aggregated with {att.aggregate!r} "
                         "(compute with aggregate='none')")
    picks: list[int | None] = [None] if channels is None else [int(c) for c in channels]
    if not picks:
        raise ValueError("channels is empty: give at least one channel index, or None for the figure's map")
    n_channels = int(att.maps.shape[1]) if att.maps.ndim == 4 else 0
    for c in picks:
        if c is not None and not 0 <= c < n_channels:
            raise IndexError(
                f"channel index {c} out of range: this map holds {n_channels} channels (0..{n_channels - 1})"
            )
    drawn = [drawn_map(att, c, batch) for c in picks]
    heads = np.stack([np.nan_to_num(d.values, nan=0.0) for d in drawn]).astype(np.float64)  # [heads, q, k]
    if channels is None:
        names = [att.aggregate if att.aggregate != "none" else "mean over channels"]
    else:
        names = [f"channel {int(att.channels[c])}" for c in picks]
    props = {
        "attention": heads.tolist(), "tokens": list(tokens), "attention_head_names": names,
        "min_value": min(d.zmin for d in drawn), "max_value": max(d.zmax for d in drawn),
        "mask_upper_tri": True,
    }
    return _rendered("AttentionHeads", circuitsvis.attention.attention_heads(**props), props)

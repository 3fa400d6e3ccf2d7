"""Cell discovery from an activation store: the same table as `discover_cells`, with the recording on
disk instead of in memory.

Correlations need only running sums: per unit and feature, the count, the means and the co-moments,
merged chunk by chunk (Chan et al. 1979), so memory holds one chunk of activations and one document's
features (features such as bracket depth are computed over each document's whole text, as
`discover_cells` computes them over its text). The split into train and held-out parts is the
corpus's first `train_fraction` of tokens and the rest, as in memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workbench.analysis.cells.discovery import CellDiscovery, _split, discovery_table
from workbench.analysis.cells.features import FeatureSpec, compute_features, feature_kind
from workbench.errors import UnknownHookError
from workbench.store.reader import ActivationStore

__all__ = ["discover_cells_from_store", "store_keys"]

CHUNK = 8192  # corpus positions read at once
MIXER_HOOK = re.compile(r"^blocks\.(\d+)\.mixer\.hook_(\w+)$")


def store_keys(store: ActivationStore) -> dict[tuple[int, str], str]:
    """(layer, quantity) -> hook name, for every mixer hook the store recorded raw."""
    return {(int(m.group(1)), m.group(2)): name for name in store.hooks if (m := MIXER_HOOK.match(name))}


@dataclass
class _CrossMoments:
    """Running count, means, squared deviations and cross co-moments of units x and features f."""

    n: int = 0
    mean_x: np.ndarray | None = None  # [units]
    mean_f: np.ndarray | None = None  # [feats]
    m2_x: np.ndarray | None = None
    m2_f: np.ndarray | None = None
    c_xf: np.ndarray | None = None  # [units, feats]

    def add(self, x: np.ndarray, f: np.ndarray) -> None:
        """Merge the rows x [n, units], f [n, feats]."""
        if x.shape[0] == 0:
            return
        mx, mf = x.mean(0), f.mean(0)
        dx, df = x - mx, f - mf
        part = (x.shape[0], mx, mf, (dx * dx).sum(0), (df * df).sum(0), dx.T @ df)
        if self.n == 0:
            self.n, self.mean_x, self.mean_f, self.m2_x, self.m2_f, self.c_xf = part
            return
        nb = part[0]
        n = self.n + nb
        ex, ef = part[1] - self.mean_x, part[2] - self.mean_f
        weight = self.n * nb / n
        self.mean_x = self.mean_x + ex * (nb / n)
        self.mean_f = self.mean_f + ef * (nb / n)
        self.m2_x = self.m2_x + part[3] + ex * ex * weight
        self.m2_f = self.m2_f + part[4] + ef * ef * weight
        self.c_xf = self.c_xf + part[5] + np.outer(ex, ef) * weight
        self.n = n

    def correlations(self) -> np.ndarray:
        """Pearson r [units, feats], NaN where a unit or feature is constant (as `correlations`)."""
        sx, sf = np.sqrt(self.m2_x), np.sqrt(self.m2_f)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = self.c_xf / np.outer(sx, sf)
        r[~np.isfinite(r)] = np.nan
        bad = (sx < 1e-9 * max(1.0, float(sx.max(initial=0))))[:, None] | (sf < 1e-12)[None, :]
        r[bad] = np.nan
        return r


def discover_cells_from_store(
    store: ActivationStore | str,
    features: Sequence[str] | Mapping[str, FeatureSpec] | None = None,
    *,
    keys: Sequence[tuple[int, str]] | None = None,
    train_fraction: float = 0.5,
) -> CellDiscovery:
    """`discover_cells` on a store's raw mixer hooks (keys: (layer, quantity); default every one).

    A store of one document recorded with `segment_tokens` at least its length gives the table of
    `discover_cells(record(model, text, ...))` (to float32 storage rounding). Features must be
    built-in names or callables text -> [pos] (they run per document). No probes (`probes=True`
    needs the activations in memory).
    """
    store = ActivationStore(store) if not isinstance(store, ActivationStore) else store
    known = store_keys(store)
    chosen = list(known) if keys is None else [tuple(k) for k in keys]
    for key in chosen:
        if key not in known:
            raise UnknownHookError(f"blocks.{key[0]}.mixer.hook_{key[1]}", message=(
                f"keys: layer {key[0]} quantity {key[1]!r} is not in the store; it holds "
                f"{sorted(known) or 'no mixer hooks'}"))
        store.values(known[key], 0, 0)  # raises if the store kept no raw tensors
    decode = store._decoder()
    cut = _split(store.n_tokens, train_fraction)
    moments = {key: (_CrossMoments(), _CrossMoments()) for key in chosen}
    names: list[str] = []
    binary: dict[str, bool] = {}
    for start, stop in store.document_ranges():
        feats = compute_features(decode(store.tokens(start, stop)), features)
        names = list(feats)
        f = np.stack([feats[n] for n in names], axis=1)  # [doc, feats]
        for j, name in enumerate(names):
            binary[name] = binary.get(name, True) and feature_kind(name, f[:, j]) == "binary"
        for a in range(start, stop, CHUNK):
            b = min(a + CHUNK, stop)
            for key in chosen:
                x = store.values(known[key], a, b).to(torch.float64).reshape(b - a, -1).numpy()  # [chunk, units]
                train, test = moments[key]
                split = min(max(cut - a, 0), b - a)
                train.add(x[:split], f[a - start : a - start + split])
                test.add(x[split:], f[a - start + split : b - start])
    kinds = ["binary" if binary[n] else "count" for n in names]
    scored = [(layer, quantity, train.correlations(), test.correlations())
              for (layer, quantity), (train, test) in moments.items()]
    return CellDiscovery(discovery_table(names, kinds, scored), None, train_fraction, store.n_tokens)

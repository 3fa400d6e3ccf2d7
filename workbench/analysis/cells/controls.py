"""Controls a discovered cell must pass before it is called a quote cell, a bracket cell...

Three questions a high correlation leaves open (Karpathy, Johnson & Fei-Fei 2015 chose their cells
by eye; discovery by correlation needs these to be read as they read it):

- **Is it chance?** Discovery picks the best of thousands of units, so its winner always looks good.
  The *shifted-feature null* reruns the same pick-on-one-part, score-on-the-other with the feature
  circularly shifted along the text (its run lengths kept, its alignment with the text broken); the
  *random-unit null* is the held-out score of every unit, unpicked.
- **Is it this feature or a confound?** Strings in Python code are often docstrings and often inside
  parentheses. `conditional_correlation` scores a unit within a subset (strings only) and with a
  confound held fixed (each paren depth compared with itself).
- **Does it hold on other text?** The pick is made on one part and scored on a disjoint part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.analysis.cells.discovery import _keys, _split
from workbench.analysis.cells.features import FeatureSpec, compute_features
from workbench.analysis.cells.recording import CellRecording

__all__ = ["ValidatedCell", "conditional_correlation", "validate_cell"]

Key = tuple[int, str]


def conditional_correlation(
    x: np.ndarray, f: np.ndarray, *, within: np.ndarray | None = None, given: np.ndarray | None = None
) -> np.ndarray:
    """Pearson r of every unit x [pos, units] with every feature f [pos] or [pos, feats], over the
    positions where `within` [pos] holds, with the categorical confound `given` [pos] held fixed
    (each of its levels' mean removed from both sides): [units] or [units, feats]; NaN where a side
    is constant."""
    x = np.asarray(x)
    single = np.ndim(f) == 1
    f = np.asarray(f).reshape(len(f), -1)  # [pos, feats]
    if x.ndim != 2 or x.shape[0] != f.shape[0]:
        raise ValueError(f"expected x [pos, units] and f [pos] with the same pos, got {x.shape} and {f.shape}")
    if within is not None:
        mask = np.asarray(within, dtype=bool)
        if mask.shape != (x.shape[0],):
            raise ValueError(f"within must be a [pos] mask of {x.shape[0]} positions, got shape {mask.shape}")
        x, f = x[mask], f[mask]
        given = None if given is None else np.asarray(given)[mask]
    if x.shape[0] < 2:
        raise ValueError(f"{x.shape[0]} position(s) left to correlate over: the subset is too small")
    xr, fr = _demean(x, given), _demean(f, given)  # float32 [pos, units], [pos, feats]
    sx = np.sqrt(np.einsum("pu,pu->u", xr, xr, dtype=np.float64))  # [units]
    sf = np.sqrt(np.einsum("pf,pf->f", fr, fr, dtype=np.float64))  # [feats]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xr.T @ fr).astype(np.float64) / np.outer(sx, sf)  # [units, feats]
    r[~np.isfinite(r)] = np.nan
    r[(sx < 1e-6 * max(1.0, float(sx.max(initial=0))))[:, None] | (sf < 1e-6)[None, :]] = np.nan
    r = np.clip(r, -1.0, 1.0)
    return r[:, 0] if single else r


def _demean(v: np.ndarray, given: np.ndarray | None) -> np.ndarray:
    """v [pos, k] less the mean of its level of `given` (the overall mean without one), as float32
    (means taken in float64; the products that follow need no more precision)."""
    v64 = np.asarray(v, dtype=np.float64)
    if given is None:
        return (v64 - v64.mean(0)).astype(np.float32)
    _, levels = np.unique(np.asarray(given), return_inverse=True)
    order = np.argsort(levels, kind="stable")
    counts = np.bincount(levels)  # [levels], every level present
    sums = np.add.reduceat(v64[order], np.concatenate([[0], np.cumsum(counts)[:-1]]))  # [levels, k]
    means = sums / counts[:, None]
    return (v64 - means[levels]).astype(np.float32)


@dataclass
class ValidatedCell:
    """The unit picked for `feature` on the first part of a recording, scored on the rest, with nulls.

    `score` is the held-out r signed by the pick's r; `shift_null[k]` the held-out score of the
    unit the same pick finds when the feature is circularly shifted (`shifts[k]` characters);
    `random_units` the held-out |r| of every unit considered (unpicked).
    """

    feature: str
    layer: int
    quantity: str
    unit: int
    train_r: float
    score: float
    shift_null: np.ndarray  # [n_shifts]
    shifts: np.ndarray  # [n_shifts]
    random_units: np.ndarray  # [units]
    n_train: int
    n_test: int

    @property
    def label(self) -> str:
        return f"L{self.layer} {self.quantity}[{self.unit}]"

    @property
    def p_value(self) -> float:
        """Share of shifted features whose pick scores at least as well (with the +1 of a permutation test)."""
        return float((1 + np.sum(self.shift_null >= self.score)) / (1 + len(self.shift_null)))

    def null_quantile(self, q: float = 0.95) -> float:
        """The q-quantile of the shifted-feature null (a shift whose pick has no score counts as 0)."""
        return float(np.quantile(np.nan_to_num(self.shift_null, nan=0.0), q))

    def random_quantile(self, q: float = 0.95) -> float:
        return float(np.nanquantile(self.random_units, q))

    def beats_nulls(self, q: float = 0.95) -> bool:
        """Whether the held-out score is above the q-quantile of both nulls."""
        return bool(self.score > self.null_quantile(q) and self.score > self.random_quantile(q))

    def summary(self) -> str:
        return (f"{self.feature}: {self.label}, held-out r {self.score:+.3f} (picked at r {self.train_r:+.3f} on "
                f"{self.n_train:,} characters, scored on {self.n_test:,}); shifted-feature null 95th percentile "
                f"{self.null_quantile():+.3f} (p = {self.p_value:.3f}, {len(self.shift_null)} shifts), "
                f"random units' 95th percentile |r| {self.random_quantile():.3f}")


def validate_cell(
    recording: CellRecording,
    feature: str | FeatureSpec,
    *,
    name: str | None = None,
    keys: Sequence[Key] | None = None,
    train_fraction: float = 0.5,
    within: np.ndarray | None = None,
    given: np.ndarray | None = None,
    n_shifts: int = 200,
    min_shift: int = 500,
    seed: int = 0,
) -> ValidatedCell:
    """Pick the unit with the largest |r| with `feature` on the first `train_fraction` of the
    recording (conditional on `within` and `given`, see `conditional_correlation`), score it on the
    rest, and run the same pick and score on `n_shifts` circular shifts of the feature (by at
    least `min_shift` characters each way) for its null.
    """
    label = name or (feature if isinstance(feature, str) else "feature")
    f = next(iter(compute_features(recording.text, {label: feature}).values()))  # [pos]
    n = len(recording)
    cut = _split(n, train_fraction)
    if not 0 < min_shift < n // 2:
        raise ValueError(f"min_shift must lie in (0, {n // 2}) for {n} positions, got {min_shift}")
    rng = np.random.default_rng(seed)
    shifts = rng.integers(min_shift, n - min_shift, size=n_shifts)  # [n_shifts]
    fs = np.stack([f] + [np.roll(f, int(k)) for k in shifts], axis=1)  # [pos, 1 + n_shifts]
    w_tr = None if within is None else np.asarray(within, dtype=bool)[:cut]
    w_te = None if within is None else np.asarray(within, dtype=bool)[cut:]
    g_tr = None if given is None else np.asarray(given)[:cut]
    g_te = None if given is None else np.asarray(given)[cut:]
    best_abs = np.full(fs.shape[1], -1.0)  # [1 + n_shifts]
    best_score = np.full(fs.shape[1], np.nan)
    best_unit: list[tuple[Key, int, float]] = [((0, ""), 0, np.nan)] * fs.shape[1]
    test_abs = []
    for key in _keys(recording, keys):
        x = recording.get(*key)  # [pos, units]
        r_tr = conditional_correlation(x[:cut], fs[:cut], within=w_tr, given=g_tr)  # [units, 1 + n_shifts]
        r_te = conditional_correlation(x[cut:], fs[cut:], within=w_te, given=g_te)
        test_abs.append(np.abs(r_te[:, 0]))
        a = np.nan_to_num(np.abs(r_tr), nan=-1.0)
        pick = a.argmax(0)  # [1 + n_shifts]
        cols = np.arange(fs.shape[1])
        better = a[pick, cols] > best_abs
        best_abs[better] = a[pick, cols][better]
        best_score[better] = (np.sign(r_tr[pick, cols]) * r_te[pick, cols])[better]
        for k in np.flatnonzero(better):
            best_unit[k] = (key, int(pick[k]), float(r_tr[pick[k], k]))
    (layer, quantity), unit, train_r = best_unit[0]
    if not quantity:
        raise ValueError(f"no unit correlates with {label!r} on the first part (is the feature constant there?)")
    return ValidatedCell(label, layer, quantity, unit, train_r, float(best_score[0]),
                         best_score[1:].astype(float), shifts, np.concatenate(test_abs), cut, n - cut)

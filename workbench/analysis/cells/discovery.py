"""Automatic discovery of interpretable cells: rank units by how well they explain each feature.

Karpathy, Johnson & Fei-Fei 2015 found their quote, bracket and line-length cells by eye
(section 4.1); here each hypothesis feature is scored against every unit by correlation (one unit)
and by sparse linear probes (a few units), chosen on the first part of the text and scored on the
held-out rest. The reverse question, what a unit responds to, is answered by `unit_profile` and by
select-by-threshold spans (`activating_spans`), as LSTMVis does (Strobelt et al. 2018).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.analysis.cells.features import FeatureSpec, compute_features, feature_kind
from workbench.analysis.cells.recording import CellRecording

__all__ = [
    "ActivatingSpan",
    "CellDiscovery",
    "activating_spans",
    "correlations",
    "discover_cells",
    "probe_features",
    "unit_profile",
]

Key = tuple[int, str]


def correlations(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Pearson r of every unit with every feature: x [pos, units], f [pos, feats] -> [units, feats].

    A unit or feature that is constant over the positions gives NaN (it explains nothing).
    """
    x = x - x.mean(0)
    f = f - f.mean(0)
    sx = np.sqrt((x * x).sum(0))  # [units]
    sf = np.sqrt((f * f).sum(0))  # [feats]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x.T @ f) / np.outer(sx, sf)
    r[~np.isfinite(r)] = np.nan
    bad = (sx < 1e-9 * max(1.0, float(sx.max(initial=0))))[:, None] | (sf < 1e-12)[None, :]
    r[bad] = np.nan
    return r


def _split(n: int, train_fraction: float) -> int:
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    cut = int(round(n * train_fraction))
    if cut < 2 or n - cut < 2:
        raise ValueError(
            f"a text of {n} characters is too short to split into train and held-out parts"
        )
    return cut


def _keys(rec: CellRecording, keys: Sequence[Key] | None) -> list[Key]:
    if keys is None:
        return rec.keys
    for k in keys:
        rec.get(*k)  # raises naming what was recorded
    return list(keys)


@dataclass
class CellDiscovery:
    """Per feature, every unit's train and held-out correlation (`table`), and optional `probes`.

    `score` is the held-out r signed by the train r, so a unit chosen on the train part that
    flips sign on held-out text scores below 0.
    """

    table: Any  # pandas DataFrame: feature, kind, layer, quantity, unit, train_r, test_r, score
    probes: Any = None  # pandas DataFrame, or None
    train_fraction: float = 0.5
    n_positions: int = 0

    def top(self, feature: str, k: int = 5) -> Any:
        """The `k` units with the largest |train r| for `feature`, with their held-out scores."""
        rows = self.table[self.table.feature == feature]
        if rows.empty:
            known = ", ".join(self.features)
            raise KeyError(f"feature {feature!r} was not scored; scored features: {known}")
        return rows.sort_values("rank").head(k).reset_index(drop=True)

    def best(self) -> Any:
        """One row per feature: its top unit (by train |r|) and held-out score, best first."""
        best = self.table[self.table["rank"] == 1].sort_values("score", ascending=False)
        return best.reset_index(drop=True)

    @property
    def features(self) -> list[str]:
        return list(dict.fromkeys(self.table.feature))


def discovery_table(
    names: Sequence[str], kinds: Sequence[str], scored: Sequence[tuple[int, str, np.ndarray, np.ndarray]],
) -> Any:
    """The ranked table from (layer, quantity, train r [units, feats], held-out r) per recorded key."""
    import pandas as pd

    frames = []
    for layer, quantity, r_train, r_test in scored:
        units = np.arange(r_train.shape[0])
        for j, name in enumerate(names):
            frames.append(pd.DataFrame({
                "feature": name, "kind": kinds[j],
                "layer": layer, "quantity": quantity, "unit": units,
                "train_r": r_train[:, j], "test_r": r_test[:, j],
            }))
    table = pd.concat(frames, ignore_index=True)
    table["score"] = np.sign(table.train_r) * table.test_r
    table["abs_train_r"] = table.train_r.abs().fillna(-1.0)
    table = table.sort_values(["feature", "abs_train_r"], ascending=[True, False], kind="stable")
    table["rank"] = table.groupby("feature").cumcount() + 1
    table = table.drop(columns="abs_train_r").reset_index(drop=True)
    order = {n: i for i, n in enumerate(names)}
    return table.sort_values(["feature", "rank"], key=lambda c: c.map(order) if c.name ==
                             "feature" else c).reset_index(drop=True)


def discover_cells(
    recording: CellRecording,
    features: Sequence[str] | Mapping[str, FeatureSpec] | None = None,
    *,
    keys: Sequence[Key] | None = None,
    train_fraction: float = 0.5,
    probes: bool = False,
    probe_units: int = 5,
) -> CellDiscovery:
    """Rank every recorded unit for every feature by |Pearson r| on the first `train_fraction`
    of the text; score it by r on the held-out rest (the split is contiguous, so no leakage).
    """
    feats = compute_features(recording.text, features)
    names = list(feats)
    f = np.stack([feats[n] for n in names], axis=1)  # [pos, feats]
    cut = _split(len(recording), train_fraction)
    scored = []
    for layer, quantity in _keys(recording, keys):
        x = recording.get(layer, quantity)  # [pos, units]
        scored.append((layer, quantity, correlations(x[:cut], f[:cut]), correlations(x[cut:], f[cut:])))
    table = discovery_table(names, [feature_kind(n, f[:, j]) for j, n in enumerate(names)], scored)
    result = CellDiscovery(table, None, train_fraction, len(recording))
    if probes:
        result.probes = probe_features(recording, feats, keys=keys, train_fraction=train_fraction,
                                       max_units=probe_units)
    return result


def probe_features(
    recording: CellRecording,
    features: Sequence[str] | Mapping[str, FeatureSpec] | None = None,
    *,
    keys: Sequence[Key] | None = None,
    train_fraction: float = 0.5,
    max_units: int = 5,
    max_train: int = 20000,
) -> Any:
    """Sparse linear probes: how well do `max_units` units of one layer and quantity, together,
    explain each feature? Units are chosen by L1 (Lasso for counts, L1 logistic regression for
    binary features) on the train part; scored held-out by R² (counts) or ROC AUC (binary).
    """
    import pandas as pd
    from sklearn.linear_model import Lasso, LinearRegression, LogisticRegression
    from sklearn.metrics import r2_score, roc_auc_score

    feats = compute_features(recording.text, features)
    cut = _split(len(recording), train_fraction)
    rows = []
    for layer, quantity in _keys(recording, keys):
        x = recording.get(layer, quantity)  # [pos, units]
        mu, sd = x[:cut].mean(0), x[:cut].std(0) + 1e-6
        z = (x - mu) / sd  # standardised with train statistics
        step = max(1, cut // max_train)
        z_tr, z_te = z[:cut:step], z[cut:]
        for name, y in feats.items():
            y_tr, y_te = y[:cut:step], y[cut:]
            kind = feature_kind(name, y)
            row = {"feature": name, "kind": kind, "layer": layer, "quantity": quantity}
            if np.unique(y_tr).size < 2 or np.unique(y_te).size < 2:
                rows.append({**row, "metric": "n/a", "test_score": np.nan, "units": []})
                continue
            if kind == "binary":
                sel = LogisticRegression(l1_ratio=1.0, C=0.05, solver="liblinear", max_iter=200)
                sel.fit(z_tr, y_tr)
                weights = np.abs(sel.coef_[0])
            else:
                sel = Lasso(alpha=0.05 * float(np.std(y_tr)), max_iter=2000)
                sel.fit(z_tr, y_tr)
                weights = np.abs(sel.coef_)
            chosen = [int(u) for u in np.argsort(-weights)[:max_units] if weights[u] > 0]
            if not chosen:
                rows.append({**row, "metric": "n/a", "test_score": np.nan, "units": []})
                continue
            if kind == "binary":
                fit = LogisticRegression(max_iter=500).fit(z_tr[:, chosen], y_tr)
                score = roc_auc_score(y_te, fit.decision_function(z_te[:, chosen]))
                metric = "roc_auc"
            else:
                fit = LinearRegression().fit(z_tr[:, chosen], y_tr)
                score = r2_score(y_te, fit.predict(z_te[:, chosen]))
                metric = "r2"
            rows.append({**row, "metric": metric, "test_score": float(score), "units": chosen})
    return pd.DataFrame(rows)


def unit_profile(
    recording: CellRecording,
    layer: int,
    quantity: str,
    unit: int,
    features: Sequence[str] | Mapping[str, FeatureSpec] | None = None,
) -> Any:
    """The reverse question: every feature's correlation with one unit, strongest first."""
    import pandas as pd

    x = recording.unit(layer, quantity, unit)[:, None]  # [pos, 1]
    feats = compute_features(recording.text, features)
    names = list(feats)
    r = correlations(x, np.stack([feats[n] for n in names], axis=1))[0]  # [feats]
    frame = pd.DataFrame({"feature": names, "r": r})
    frame["abs_r"] = frame.r.abs()
    return frame.sort_values("abs_r", ascending=False, na_position="last").drop(
        columns="abs_r").reset_index(drop=True)


@dataclass(frozen=True)
class ActivatingSpan:
    """A maximal run of characters on which a unit stays above the threshold."""

    start: int
    stop: int
    text: str
    mean: float
    peak: float


def activating_spans(
    recording: CellRecording,
    layer: int,
    quantity: str,
    unit: int,
    threshold: float | None = None,
    *,
    min_length: int = 1,
    top: int = 10,
    below: bool = False,
) -> list[ActivatingSpan]:
    """Select-by-threshold (LSTMVis): runs where the unit is above `threshold` (default: its 90th
    percentile; with `below=True`, runs under it, default the 10th), longest first.
    """
    v = recording.unit(layer, quantity, unit)  # [pos]
    if threshold is None:
        threshold = float(np.quantile(v, 0.1 if below else 0.9))
    on = v < threshold if below else v > threshold
    edges = np.diff(np.concatenate([[0], on.astype(np.int8), [0]]))
    starts, stops = np.where(edges == 1)[0], np.where(edges == -1)[0]
    spans = [
        ActivatingSpan(int(a), int(b), recording.text[a:b], float(v[a:b].mean()),
                       float(v[a:b].min() if below else v[a:b].max()))
        for a, b in zip(starts, stops, strict=True)
        if b - a >= min_length
    ]
    spans.sort(key=lambda s: (-(s.stop - s.start), -abs(s.mean)))
    return spans[:top]

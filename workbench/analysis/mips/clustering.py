"""Discrete states from a nonlinear RNN's hidden states (Michaud et al. 2024, Sec. 3.3: clustering into a code).

Two ways to group hidden states, the one with fewer contradictions (then fewer states) wins:
`kmeans` (scikit-learn, the smallest k whose machine is deterministic, as the paper clusters) and
`behaviour` (points that the network maps to the same outputs under every probe string up to a
length are one state: the network itself is the oracle, a Myhill-Nerode test).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from workbench.analysis.mips.fsm import FSM, fsm_from_labels, symbol_index, symbols_of
from workbench.analysis.mips.training import TrainedRNN, _decode, predict

__all__ = ["discretize_states", "state_machines"]


def _probe_strings(n_symbols: int, budget: int = 64) -> np.ndarray:
    """All symbol-index strings of the longest length L with n_symbols**L <= budget (L >= 1): [S, L]."""
    length = 1
    while n_symbols ** (length + 1) <= budget and length < 6:
        length += 1
    return np.array(list(itertools.product(range(n_symbols), repeat=length)), dtype=np.int64)


def _symbol_features(trained: TrainedRNN, symbols: list) -> torch.Tensor:
    """Features of each input symbol: [n_symbols, d_input]."""
    arr = np.array([[s] if not isinstance(s, tuple) else list(s) for s in symbols])[None]  # [1, S, c]
    return trained.features(arr)[0]


def _signatures(
    trained: TrainedRNN, points: torch.Tensor, probes: np.ndarray, feats: torch.Tensor
) -> np.ndarray:
    """Network outputs from each point under each probe string, flattened: [n_points, S * L * c_out + c_out]."""
    model, n, s = trained.model, points.shape[0], probes.shape[0]
    with torch.no_grad():
        here = _decode(model.read(points)[:, None], trained.classes, trained.task.n_outputs).reshape(n, -1)
        rows = []
        for chunk in torch.split(torch.arange(n), max(1, 20000 // s)):
            h0 = points[chunk].repeat_interleave(s, dim=0)  # [m*S, d]
            x = feats[torch.as_tensor(probes)].repeat(len(chunk), 1, 1)  # [m*S, L, d_in]
            out = model(x, initial_state=h0)
            rows.append(_decode(out, trained.classes, trained.task.n_outputs).reshape(len(chunk), -1))
    return np.concatenate([here, np.concatenate(rows)], axis=1)


def discretize_states(
    trained: TrainedRNN, n_seqs: int = 400, method: str = "auto", max_states: int = 128, seed: int = 7
) -> FSM:
    """Group the hidden states of `n_seqs` sequences into an (unminimised) Moore machine: the best candidate."""
    return state_machines(trained, n_seqs=n_seqs, method=method, max_states=max_states, seed=seed)[0]


def state_machines(
    trained: TrainedRNN,
    n_seqs: int = 400,
    method: str = "auto",
    max_states: int = 128,
    seed: int = 7,
    max_kmeans: int = 40,
) -> list[FSM]:
    """Every grouping tried (behaviour probes of two depths, k-means), fewest contradictions then states first.

    All candidates are returned (unminimised) so the caller can minimise, synthesise and verify each:
    the behaviour grouping probes beyond the training length and can over-split, k-means can merge.
    """
    task = trained.task
    x, _ = task.generate(n_seqs, seed=seed)  # [b, T, c]
    feats = trained.features(x)
    hs = trained.model.hidden_states(feats)  # [b, T, d]
    y = predict(trained, x)  # the network's outputs, [b, T, c_out]
    d = hs.shape[-1]
    points = torch.cat([hs.reshape(-1, d), hs.new_zeros(1, d)])  # [b*T + 1, d], the start state last
    rounded = np.round(points.numpy(), 5)
    uniq, inverse = np.unique(rounded, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    symbols = symbols_of(task)
    sym = symbol_index(task, x)  # [b, T]
    sym_feats = _symbol_features(trained, symbols)
    candidates: list[FSM] = []
    if method in ("auto", "behaviour"):
        depths: set[int] = set()
        for budget in (64, 8):
            probes = _probe_strings(len(symbols), budget)
            if probes.shape[1] in depths:
                continue
            depths.add(probes.shape[1])
            sig = _signatures(trained, torch.as_tensor(uniq), probes, sym_feats)
            keys, group = np.unique(sig, axis=0, return_inverse=True)
            group = group.ravel()
            point_label = group[inverse]
            if len(keys) > 4 * max_states:
                continue

            def fill(q: int, a: int, group=group, keys=keys, probes=probes) -> int | None:
                rep = torch.as_tensor(uniq[np.flatnonzero(group == q)[:1]])
                if not len(rep):
                    return None
                with torch.no_grad():
                    h2 = trained.model.step(rep, sym_feats[a][None] / trained.model.x_scale)["h"]
                s2 = _signatures(trained, h2, probes, sym_feats)[0]
                match = np.flatnonzero((keys == s2).all(axis=1))
                return int(match[0]) if len(match) else None

            candidates.append(
                fsm_from_labels(
                    point_label[:-1].reshape(x.shape[:2]),
                    int(point_label[-1]),
                    sym,
                    y,
                    symbols,
                    fill,
                    f"behaviour{probes.shape[1]}",
                )
            )
    if method in ("auto", "kmeans"):
        from sklearn.cluster import KMeans

        weights = np.bincount(inverse, minlength=len(uniq)).astype(float)
        n_out = len(np.unique(y.reshape(-1, y.shape[-1]), axis=0))
        for k in range(max(1, n_out), min(max_kmeans, max_states, len(uniq)) + 1):
            km = KMeans(n_clusters=k, n_init=3, random_state=0).fit(uniq, sample_weight=weights)
            point_label = km.labels_[inverse]
            fsm = fsm_from_labels(
                point_label[:-1].reshape(x.shape[:2]), int(point_label[-1]), sym, y, symbols, None, "kmeans"
            )
            if fsm.contradictions == 0:
                candidates.append(fsm)
                break
    if not candidates:
        raise ValueError(
            f"{task.name}: no grouping of the hidden states gave a machine with at most {max_states} states"
        )
    return sorted(candidates, key=lambda f: (f.contradictions, f.n_states))

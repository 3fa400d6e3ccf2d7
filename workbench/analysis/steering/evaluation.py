"""Measuring steering: behaviour probability against the multiplier, its cost to fluency on neutral
text, residual vs state steering at equal norm, and how long a one-time state edit persists.

Rimsky et al. 2024 (section 4) plot the behaviour's probability against the multiplier; Paulo,
Marshall & Belrose 2024 (section 4) compare residual and state steering. Persistence, the decay of a
single state injection over the following tokens, is this workbench's addition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.analysis.steering.application import Positions, Steer, steering
from workbench.analysis.steering.vectors import SteeringVector
from workbench.analysis.tokens import group_by_length, tokenize, tokenize_texts
from workbench.errors import EmptyInputError

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = [
    "SteeringComparison",
    "SteeringSweep",
    "compare_steering",
    "fluency_cost",
    "generation_rate",
    "multiplier_sweep",
    "persistence",
    "target_probability",
]

LN2 = float(np.log(2.0))
# (logits [1, pos, d_vocab], tokens [1, pos]) -> the behaviour's score on one prompt
ScoreFn = Callable[[Tensor, Tensor], float]
Vectors = SteeringVector | Sequence[SteeringVector]


def _steers(vectors: Vectors, multiplier: float, positions: Positions, relative: bool,
            layers: Sequence[int] | None) -> list[Steer]:
    items = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    if not items:
        raise ValueError("no steering vectors given")
    return [Steer(v, multiplier, positions, layers, relative) for v in items]


def _target_ids(model: HookedModel, targets: str) -> Tensor:
    """Token ids of the characters in `targets`; unknown characters raise, naming them."""
    if not isinstance(targets, str) or not targets:
        raise EmptyInputError("targets must be a non-empty string of characters")
    return torch.unique(tokenize(model, targets, label="targets"))


@torch.no_grad()
def _steered_logits(model: HookedModel, tokens: Tensor, steers: Sequence[Steer], path: str | None,
                    allow_other_model: bool) -> Tensor:
    """logits [batch, pos, d_vocab] of one batch of equal-length sequences under `steers`."""
    with steering(model, steers, allow_other_model):
        return model(tokens, path=path).float()


@torch.no_grad()
def target_probability(
    model: HookedModel, prompts: Sequence[str], targets: str | None = None, steers: Sequence[Steer] = (),
    *, score: ScoreFn | None = None, path: str | None = None, allow_other_model: bool = False,
) -> np.ndarray:
    """[prompts]: the probability the model gives any character of `targets` right after each
    prompt (or `score(logits, tokens)` per prompt), with `steers` applied."""
    if (targets is None) == (score is None):
        raise ValueError("give exactly one of targets= (characters) or score= (a function)")
    encoded = tokenize_texts(model, prompts, "prompt")
    ids = _target_ids(model, targets) if targets is not None else None
    out = np.zeros(len(encoded))
    for members in group_by_length(encoded).values():
        tokens = torch.stack([encoded[i] for i in members]).to(model.device)  # [b, pos]
        logits = _steered_logits(model, tokens, steers, path, allow_other_model)
        for row, i in enumerate(members):
            if ids is not None:
                probs = logits[row, -1].softmax(-1)  # [d_vocab]
                out[i] = float(probs[ids.to(probs.device)].sum())
            else:
                out[i] = float(score(logits[row : row + 1], tokens[row : row + 1]))
    return out


@torch.no_grad()
def generation_rate(
    model: HookedModel, prompts: Sequence[str], targets: str, steers: Sequence[Steer] = (), *,
    max_new_tokens: int = 40, greedy: bool = False, seed: int = 0, path: str | None = None,
    allow_other_model: bool = False,
) -> np.ndarray:
    """[prompts]: the fraction of generated characters that are in `targets` (seeded sampling)."""
    from workbench.analysis.steering.application import generate_steered

    encoded = tokenize_texts(model, prompts, "prompt")
    ids = _target_ids(model, targets)
    rates = []
    for i, prompt in enumerate(encoded):
        out = generate_steered(model, prompt[None], steers, max_new_tokens,
                               greedy=greedy, seed=seed + i, path=path,
                               allow_other_model=allow_other_model)
        new = out[0, -max_new_tokens:] if max_new_tokens else out[0, :0]
        rates.append(float(torch.isin(new.cpu(), ids).float().mean()) if max_new_tokens else 0.0)
    return np.array(rates)


@torch.no_grad()
def fluency_cost(
    model: HookedModel, text: str, steers: Sequence[Steer] = (), *, path: str | None = None,
    allow_other_model: bool = False, clean: Tensor | None = None,
) -> dict[str, float]:
    """Cross-entropy on `text` in bits per character with and without `steers`, and the mean
    KL(clean ‖ steered) of the next-character distributions in nats: what steering costs.
    `clean` may pass the unsteered log-probabilities [1, pos, d_vocab] when already computed."""
    if not isinstance(text, str) or len(text) < 2:
        raise EmptyInputError("the neutral text needs at least two characters")
    tokens = tokenize(model, text, unknown="map")[None].to(model.device)  # [1, pos]
    if clean is None:
        clean = model(tokens, path=path).float().log_softmax(-1)  # [1, pos, d_vocab]
    steered = _steered_logits(model, tokens, steers, path, allow_other_model).log_softmax(-1)
    target = tokens[:, 1:]

    def bpc(logp: Tensor) -> float:
        return float(F.nll_loss(logp[:, :-1].flatten(0, 1), target.flatten())) / LN2

    kl = (clean.exp() * (clean - steered)).sum(-1).mean()
    return {"bpc": bpc(steered), "clean_bpc": bpc(clean), "delta_bpc": bpc(steered) - bpc(clean),
            "kl": float(kl)}


@dataclass
class SteeringSweep:
    """One multiplier sweep: `table` has a row per multiplier with the behaviour's mean and
    standard error over prompts and the fluency cost (bpc, delta_bpc, kl) on neutral text."""

    table: pd.DataFrame
    label: str = ""
    per_prompt: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)  # [mult, prompts]

    @property
    def baseline(self) -> float:
        """The behaviour at multiplier 0 (interpolated if 0 was not swept)."""
        t = self.table.sort_values("multiplier")
        return float(np.interp(0.0, t.multiplier, t.behaviour))

    def spearman(self) -> float:
        """Rank correlation of behaviour with multiplier: +1 when it rises monotonically."""
        t = self.table
        return float(pd.Series(t.multiplier.to_numpy()).corr(pd.Series(t.behaviour.to_numpy()),
                                                               method="spearman"))

    def is_monotonic(self, low: float | None = None, high: float | None = None) -> bool:
        """Whether the behaviour never falls as the multiplier rises over [low, high]."""
        t = self.table.sort_values("multiplier")
        if low is not None:
            t = t[t.multiplier >= low]
        if high is not None:
            t = t[t.multiplier <= high]
        return bool(np.all(np.diff(t.behaviour.to_numpy()) >= 0))


@torch.no_grad()
def multiplier_sweep(
    model: HookedModel,
    vectors: Vectors,
    multipliers: Sequence[float],
    prompts: Sequence[str],
    targets: str | None = None,
    *,
    score: ScoreFn | None = None,
    neutral_text: str | None = None,
    positions: Positions = "all",
    relative: bool = False,
    layers: Sequence[int] | None = None,
    generate_tokens: int = 0,
    label: str = "",
    path: str | None = None,
    allow_other_model: bool = False,
) -> SteeringSweep:
    """Sweep the multiplier (Rimsky et al. 2024, Fig. 3): per multiplier, the behaviour on held-out
    `prompts` (probability of `targets` next, or `score`), the fluency cost on `neutral_text`, and
    with `generate_tokens` > 0 the fraction of target characters in seeded samples."""
    multipliers = [float(m) for m in multipliers]
    if not multipliers:
        raise ValueError("no multipliers given")
    rows, per_prompt = [], []
    clean = None
    if neutral_text is not None and len(neutral_text) >= 2:
        ids = tokenize(model, neutral_text, unknown="map")[None].to(model.device)
        clean = model(ids, path=path).float().log_softmax(-1)  # [1, pos, d_vocab], once per sweep
    for m in multipliers:
        steers = _steers(vectors, m, positions, relative, layers)
        values = target_probability(model, prompts, targets, steers, score=score, path=path,
                                    allow_other_model=allow_other_model)
        per_prompt.append(values)
        row: dict[str, float] = {
            "multiplier": m, "behaviour": float(values.mean()),
            "behaviour_sem": float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0,
        }
        if neutral_text is not None:
            row.update(fluency_cost(model, neutral_text, steers, path=path,
                                    allow_other_model=allow_other_model, clean=clean))
        if generate_tokens and targets is not None:
            row["generated_rate"] = float(generation_rate(
                model, prompts, targets, steers, max_new_tokens=generate_tokens, path=path,
                allow_other_model=allow_other_model).mean())
        rows.append(row)
    if not label:
        items = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
        label = " + ".join(v.label or v.hook for v in items)
    return SteeringSweep(pd.DataFrame(rows), label, np.array(per_prompt))


@dataclass
class SteeringComparison:
    """Several sweeps over the same multipliers (e.g. residual, state, both) at equal norm."""

    sweeps: dict[str, SteeringSweep]

    @property
    def table(self) -> pd.DataFrame:
        """All sweeps in one long table, with a `method` column."""
        return pd.concat([s.table.assign(method=name) for name, s in self.sweeps.items()],
                         ignore_index=True)

    def effect(self, multiplier: float) -> pd.Series:
        """Per method, the behaviour's change from multiplier 0 at `multiplier` (interpolated)."""
        return pd.Series({
            name: float(np.interp(multiplier, s.table.sort_values("multiplier").multiplier,
                                  s.table.sort_values("multiplier").behaviour)) - s.baseline
            for name, s in self.sweeps.items()
        }, name=f"effect at {multiplier:g}")


def compare_steering(
    model: HookedModel, methods: Mapping[str, Vectors], multipliers: Sequence[float], prompts: Sequence[str],
    targets: str | None = None, *, relative: bool = True, **sweep_kwargs: Any,
) -> SteeringComparison:
    """Sweep each method (a vector, or vectors applied together) over the same multipliers; with
    `relative=True` each vector is rescaled to its hook's typical norm, so hooks compare at equal
    norm (Paulo et al. 2024 compare residual and state steering this way)."""
    if not methods:
        raise ValueError("no methods to compare")
    return SteeringComparison({
        name: multiplier_sweep(model, vectors, multipliers, prompts, targets, relative=relative,
                               label=name, **sweep_kwargs)
        for name, vectors in methods.items()
    })


def _flat_state(state: list[dict[str, Tensor]]) -> Tensor:
    """Every layer's carried state as one vector [batch, total]."""
    return torch.cat([t.flatten(1).float() for layer in state for _, t in sorted(layer.items())], 1)


@torch.no_grad()
def persistence(
    model: HookedModel, vector: SteeringVector, texts: str | Sequence[str], multiplier: float = 1.0, *,
    at: int | None = None, relative: bool = True, horizon: int | None = None, sustained: bool = False,
    level: float = 0.95, n_boot: int = 1000, seed: int = 0, path: str | None = None,
    allow_other_model: bool = False,
) -> pd.DataFrame:
    """Inject `multiplier × vector` once at position `at` of each text (or, `sustained`, at every
    position from `at` on) and follow it: per offset k >= 0, KL(clean ‖ steered) of the
    next-character distribution at at + k, the largest log-probability change, and the norm of
    the change in the carried state (all layers) relative to offset 0 (`state_ratio`).

    Each column is the mean over texts; with several texts, `*_low` / `*_high` give a percentile
    bootstrap interval of that mean (texts resampled, `level`), and `n_texts` how many texts
    reach that offset. Texts of equal length run as one batch."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    encoded = tokenize_texts(model, texts, "persistence")
    per_text: list[pd.DataFrame] = [pd.DataFrame()] * len(encoded)
    for length, members in group_by_length(encoded).items():
        start = length // 4 if at is None else (at if at >= 0 else length + at)
        if not 0 <= start < length:
            raise IndexError(f"at={at} is outside a text of {length} characters")
        stop = length if horizon is None else min(length, start + horizon + 1)
        where: Positions = slice(start, None) if sustained else start
        steer = Steer(vector, multiplier, where, relative=relative)
        tokens = torch.stack([encoded[i] for i in members])[:, :stop]  # [b, pos]
        clean_logp, clean_states = _stepwise(model, tokens, (), path, allow_other_model)
        steer_logp, steer_states = _stepwise(model, tokens, [steer], path, allow_other_model)
        diff = (steer_states - clean_states).norm(dim=-1)[:, start:]  # [b, offsets]
        kl = (clean_logp.exp() * (clean_logp - steer_logp)).sum(-1)[:, start:]  # [b, offsets]
        dlogit = (steer_logp - clean_logp).abs().amax(-1)[:, start:]  # [b, offsets]
        ratio = torch.where(diff[:, :1] > 0, diff / diff[:, :1].clamp_min(1e-30),
                            torch.full_like(diff, float("nan")))
        offsets = np.arange(diff.shape[1])
        for row, i in enumerate(members):
            per_text[i] = pd.DataFrame({
                "offset": offsets, "kl": kl[row].cpu().numpy(),
                "max_logprob_change": dlogit[row].cpu().numpy(),
                "state_change": diff[row].cpu().numpy(), "state_ratio": ratio[row].cpu().numpy()})
    return _mean_with_interval(per_text, ("kl", "max_logprob_change", "state_change", "state_ratio"),
                               level, n_boot, seed)


def _mean_with_interval(per_text: Sequence[pd.DataFrame], columns: Sequence[str], level: float,
                        n_boot: int, seed: int) -> pd.DataFrame:
    """Per offset, the mean of `columns` over texts, a bootstrap interval of it and `n_texts`."""
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2
    rows = []
    for offset, group in pd.concat(per_text, ignore_index=True).groupby("offset"):
        row: dict[str, float] = {"offset": int(offset), "n_texts": len(group)}
        for column in columns:
            values = group[column].to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            row[column] = float(values.mean()) if len(values) else float("nan")
            if len(values) > 1:
                boots = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
                row[f"{column}_low"] = float(np.quantile(boots, tail))
                row[f"{column}_high"] = float(np.quantile(boots, 1 - tail))
            else:
                row[f"{column}_low"] = row[f"{column}_high"] = row[column]
        rows.append(row)
    return pd.DataFrame(rows)


def _stepwise(model: HookedModel, tokens: Tensor, steers: Sequence[Steer], path: str | None,
              allow_other_model: bool) -> tuple[Tensor, Tensor]:
    """Run a batch of equal-length sequences [b, pos] a token at a time under `steers`: (log-probs
    [b, pos, d_vocab], carried state after each position [b, pos, total]); stepping reads the true
    state the recurrence carries."""
    logps, states, state = [], [], None
    with steering(model, steers, allow_other_model):
        for t in range(tokens.shape[1]):
            logits, state = model(tokens[:, t : t + 1].to(model.device), initial_state=state,
                                  return_state=True, path=path)
            logps.append(logits[:, -1].float().log_softmax(-1))  # [b, d_vocab]
            states.append(_flat_state(state))  # [b, total]
    return torch.stack(logps, 1), torch.stack(states, 1)

"""Steering evaluation: a sweep on the planted model rises monotonically with the multiplier, the
fluency cost is zero at multiplier 0, a one-time state injection persists exactly as the planted
cell holds it, and the figures draw."""

import numpy as np
import pytest

from workbench.analysis.steering import (
    Steer,
    compare_steering,
    contrastive_vector,
    fluency_cost,
    multiplier_sweep,
    persistence,
    planted_steering_lstm,
    target_probability,
)
from workbench.analysis.steering.figures import pair_cosine_figure, persistence_figure, sweep_figure
from workbench.errors import EmptyInputError

POSITIVE = ["x = 1  # set it", "def f():  # a"]
NEGATIVE = ["x = 1  + set it", "def f():  + a"]
PROMPTS = ["y = 2", "print(x)", "z"]  # held out: none of them is a pair text
NEUTRAL = "for i in range(3):\n    print(i)\n"


@pytest.fixture(scope="module")
def planted():
    return planted_steering_lstm()


@pytest.fixture(scope="module")
def vectors(planted):
    return {hook: contrastive_vector(planted, POSITIVE, NEGATIVE, hook, layer=0)
            for hook in ("resid_post", "c")}


def test_sweep_is_monotonic_and_costs_nothing_at_zero(planted, vectors):
    sweep = multiplier_sweep(planted, vectors["resid_post"], [-1, -0.5, 0, 0.5, 1, 2], PROMPTS, "#",
                             neutral_text=NEUTRAL)
    t = sweep.table
    assert sweep.is_monotonic() and sweep.spearman() == pytest.approx(1.0)
    assert t.behaviour.iloc[-1] > 0.3 > t.behaviour.iloc[2]  # p('#') climbs from 1/|V| to > 0.3
    zero = t[t.multiplier == 0].iloc[0]
    assert zero.kl == pytest.approx(0.0, abs=1e-9) and zero.delta_bpc == pytest.approx(0.0, abs=1e-9)
    assert t.kl.iloc[-1] > t.kl.iloc[-2] > 0
    assert sweep.per_prompt.shape == (6, 3)


def test_relative_multipliers_compare_hooks_at_equal_norm(planted, vectors):
    cmp = compare_steering(planted, {"resid": vectors["resid_post"], "state": vectors["c"],
                                     "both": [vectors["resid_post"], vectors["c"]]},
                           [0, 0.5, 1], PROMPTS, "#")
    assert set(cmp.table.method) == {"resid", "state", "both"}
    effect = cmp.effect(1.0)
    assert effect["both"] > max(effect["resid"], effect["state"]) > 0
    fig = sweep_figure(cmp)
    assert {t.name for t in fig.data} == {"resid", "state", "both"}


def test_a_user_score_function_replaces_the_targets(planted, vectors):
    hash_id = planted.tokenizer.stoi["#"]
    scores = target_probability(planted, PROMPTS, steers=[Steer(vectors["resid_post"], 1.0)],
                                score=lambda logits, tokens: float(logits[0, -1, hash_id]))
    np.testing.assert_allclose(scores, 5.0, atol=1e-4)  # the planted logit gain × |v| = 5
    with pytest.raises(ValueError, match="exactly one of targets"):
        target_probability(planted, PROMPTS, "#", score=lambda logits, tokens: 0.0)


def test_persistence_follows_the_planted_cell(planted, vectors):
    text = "abcdefgh\nabcd"
    table = persistence(planted, vectors["c"], text, multiplier=1.0, at=2, relative=False)
    # the injected 1 is held (f = 1) until the newline at position 8 clears it (f = 0)
    assert table.offset.tolist() == list(range(len(text) - 2))
    np.testing.assert_allclose(table.state_ratio[:6], 1.0, atol=1e-5)
    assert (table.state_ratio[6:] < 1e-5).all()
    assert (table.kl[:6] > 0.01).all() and (table.kl[6:] < 1e-8).all()
    assert persistence_figure({"planted lstm": table}).data[0].name == "planted lstm"


def test_fluency_cost_and_bad_input(planted, vectors):
    cost = fluency_cost(planted, NEUTRAL, [Steer(vectors["resid_post"], 2.0)])
    assert cost["delta_bpc"] > 0 and cost["kl"] > 0
    with pytest.raises(EmptyInputError):
        fluency_cost(planted, "a")
    with pytest.raises(EmptyInputError, match="no prompt texts"):
        multiplier_sweep(planted, vectors["c"], [0, 1], [], "#")
    with pytest.raises(EmptyInputError, match="targets"):
        multiplier_sweep(planted, vectors["c"], [0, 1], PROMPTS, "")
    with pytest.raises(ValueError, match="no multipliers"):
        multiplier_sweep(planted, vectors["c"], [], PROMPTS, "#")
    with pytest.raises(IndexError, match="outside a text"):
        persistence(planted, vectors["c"], "abc", at=10)
    assert len(pair_cosine_figure(vectors).data) == 2


def test_persistence_over_several_texts_gives_intervals_and_a_sustained_push_accumulates(planted, vectors):
    texts = ["abcdefgh\nabcd", "xyzxyzxy\nxyzx", "a b c d\n efgh"]  # equal lengths: one batch
    once = persistence(planted, vectors["c"], texts, multiplier=1.0, at=2, relative=False)
    assert (once.n_texts == 3).all()
    np.testing.assert_allclose(once.state_ratio[:5], 1.0, atol=1e-5)  # held by f = 1 in every text
    assert (once.state_ratio_low <= once.state_ratio + 1e-9).all()
    assert (once.state_ratio_high >= once.state_ratio - 1e-9).all()
    # added at every position from 2 on, the planted cell (f = 1) sums the pushes, so the carried
    # state (c and the tanh-bounded h) moves further every step until the newline clears it
    sustained = persistence(planted, vectors["c"], texts, multiplier=1.0, at=2, relative=False, sustained=True)
    assert (np.diff(sustained.state_ratio[:5]) > 0.5).all() and sustained.state_ratio[4] > 3.5
    # one text alone: the interval collapses onto the mean
    single = persistence(planted, vectors["c"], texts[0], multiplier=1.0, at=2, relative=False)
    assert (single.kl_low == single.kl).all() and (single.n_texts == 1).all()

"""Controls for steering: equal-norm random directions, the behaviour read at equal fluency cost,
and the planted comment direction beating every random direction of its norm."""

import pandas as pd
import pytest
import torch

from workbench.analysis.steering import (
    SteeringSweep,
    contrastive_vector,
    effect_at_cost,
    equal_norm_random,
    planted_steering_lstm,
    steering_tradeoff,
)
from workbench.analysis.steering.figures import tradeoff_figure

POSITIVE = ["x = 1  # set it", "def f():  # a"]
NEGATIVE = ["x = 1  + set it", "def f():  + a"]
PROMPTS = ["y = 2", "print(x)", "z"]
NEUTRAL = "for i in range(3):\n    print(i)\n"


@pytest.fixture(scope="module")
def planted():
    return planted_steering_lstm()


@pytest.fixture(scope="module")
def vector(planted):
    return contrastive_vector(planted, POSITIVE, NEGATIVE, "resid_post", layer=0)


def test_random_directions_have_the_vectors_norm_and_hook_and_differ(vector):
    randoms = equal_norm_random(vector, 3, seed=1)
    assert [r.hook for r in randoms] == [vector.hook] * 3
    for r in randoms:
        assert r.norm == pytest.approx(vector.norm, rel=1e-5) and r.reference_norm == vector.reference_norm
    assert abs(float(torch.nn.functional.cosine_similarity(randoms[0].vector, randoms[1].vector, 0))) < 0.99
    again = equal_norm_random(vector, 3, seed=1)
    assert torch.equal(again[2].vector, randoms[2].vector)  # seeded
    with pytest.raises(ValueError, match="positive number"):
        equal_norm_random(vector, 0)


def test_effect_at_cost_interpolates_where_the_cost_crosses():
    table = pd.DataFrame({"multiplier": [-1.0, 0.0, 1.0, 2.0], "behaviour": [0.0, 0.1, 0.3, 0.9],
                          "delta_bpc": [2.0, 0.0, 0.5, 1.5]})
    sweep = SteeringSweep(table)
    assert effect_at_cost(sweep, 0.25) == pytest.approx(0.1)  # halfway to multiplier 1
    assert effect_at_cost(sweep, 1.0) == pytest.approx(0.5)  # halfway from 1 to 2
    assert effect_at_cost(sweep, 9.0) == pytest.approx(0.8)  # never reached: the farthest point
    assert effect_at_cost(sweep, 1.0, sign=-1) == pytest.approx(-0.05)
    with pytest.raises(ValueError, match="multiplier 0"):
        effect_at_cost(SteeringSweep(table[table.multiplier != 0]), 0.25)


def test_the_planted_direction_beats_every_equal_norm_random_direction(planted, vector):
    tradeoff = steering_tradeoff(planted, vector, [0, 0.5, 1, 2], PROMPTS, "#", neutral_text=NEUTRAL,
                                 n_random=4, random_multipliers=[0, 1, 2])
    at = tradeoff.at_cost(0.5)
    assert at["n_random"] == 4 and at["vector"] > 0.1 > at["random_max_abs"]
    assert set(tradeoff.table.direction) == {"vector", "random 0", "random 1", "random 2", "random 3"}
    fig = tradeoff_figure({"comment": tradeoff})
    assert len(fig.data) == 5 and fig.data[-1].name.startswith("steering vector")
    with pytest.raises(ValueError, match="neutral_text"):
        steering_tradeoff(planted, vector, [0, 1], PROMPTS, "#", neutral_text="")

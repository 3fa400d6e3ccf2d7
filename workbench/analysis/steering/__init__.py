"""Activation steering: contrastive activation addition (Rimsky et al. 2024, *Steering Llama 2 via
Contrastive Activation Addition*) on the residual stream, and on the recurrent state (Paulo,
Marshall & Belrose 2024, *Does Transformer Interpretability Transfer to RNNs?*).

`vectors` builds a vector from contrastive texts at any hook, `application` adds it during a
forward pass or generation at absolute positions, `evaluation` sweeps the multiplier, measures the
cost to fluency and the persistence of a state injection, `controls` sets equal-norm random
directions beside a vector and reads the behaviour at equal fluency cost, `figures` draws the results.

>>> from workbench.analysis.steering import Steer, contrastive_vector, planted_steering_lstm, run_steered
>>> model = planted_steering_lstm()
>>> v = contrastive_vector(model, ["x = 1  # a"], ["x = 1  + a"], "resid_post", layer=0)
>>> [round(float(x), 3) for x in v.vector[:4]]  # the planted comment direction is dimension 3
[0.0, 0.0, 0.0, 1.0]
>>> hash_id = model.tokenizer.stoi["#"]
>>> float(run_steered(model, "x = 1", Steer(v, 2.0))[0, -1, hash_id].detach())  # logit('#') = 5 × 2
10.0
"""

from workbench.analysis.planted.steering import (
    COMMENT_CELL,
    COMMENT_DIRECTION,
    LOGIT_GAIN,
    planted_steering_lstm,
)
from workbench.analysis.steering.application import (
    PositionClock,
    Positions,
    Steer,
    SteeringHook,
    generate_steered,
    run_steered,
    steering,
)
from workbench.analysis.steering.behaviours import (
    BEHAVIOURS,
    Behaviour,
    behaviour_vector,
    get_behaviour,
)
from workbench.analysis.steering.controls import (
    SteeringTradeoff,
    effect_at_cost,
    equal_norm_random,
    steering_tradeoff,
)
from workbench.analysis.steering.evaluation import (
    SteeringComparison,
    SteeringSweep,
    compare_steering,
    fluency_cost,
    generation_rate,
    multiplier_sweep,
    persistence,
    target_probability,
)
from workbench.analysis.steering.vectors import (
    ModelMismatchError,
    SteeringVector,
    activation_samples,
    contrastive_vector,
    hook_shape,
    resolve_hook,
    weights_hash,
)

__all__ = [
    "BEHAVIOURS",
    "COMMENT_CELL",
    "COMMENT_DIRECTION",
    "LOGIT_GAIN",
    "Behaviour",
    "ModelMismatchError",
    "PositionClock",
    "Positions",
    "Steer",
    "SteeringComparison",
    "SteeringHook",
    "SteeringSweep",
    "SteeringTradeoff",
    "SteeringVector",
    "activation_samples",
    "behaviour_vector",
    "compare_steering",
    "contrastive_vector",
    "effect_at_cost",
    "equal_norm_random",
    "fluency_cost",
    "generate_steered",
    "generation_rate",
    "get_behaviour",
    "hook_shape",
    "multiplier_sweep",
    "persistence",
    "planted_steering_lstm",
    "resolve_hook",
    "run_steered",
    "steering",
    "steering_tradeoff",
    "target_probability",
    "weights_hash",
]

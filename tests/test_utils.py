"""`workbench.utils.get_act_name`: every short name it composes is a hook the model has."""

from __future__ import annotations

import pytest

from workbench.models import HookedRecurrentLM, RecurrentConfig
from workbench.utils import BLOCK_HOOKS, get_act_name, hook_layer, in_layer


def test_composed_names_are_the_models_hooks():
    model = HookedRecurrentLM(RecurrentConfig(family="lstm", n_layers=2, d_model=8, d_hidden=8, d_vocab=5,
                                              d_mlp=16))
    names = [get_act_name("embed"), get_act_name("logits"), get_act_name("normalized", 1, "ln1"),
             get_act_name("post", 0, "mlp"), get_act_name("initial_c", 1)]
    names += [get_act_name(short, layer) for layer in (0, 1) for short in (*BLOCK_HOOKS, "c", "h", "f")]
    assert all(name in model.hook_dict for name in names), [n for n in names if n not in model.hook_dict]
    assert get_act_name("blocks.0.hook_resid_pre") == "blocks.0.hook_resid_pre"


def test_layers_of_names_and_errors():
    assert hook_layer("blocks.3.mixer.hook_c") == 3 and hook_layer("hook_embed") is None
    assert in_layer("blocks.3.mixer.hook_c", 1) == "blocks.1.mixer.hook_c"
    with pytest.raises(ValueError, match="give its layer"):
        get_act_name("resid_post")
    with pytest.raises(ValueError, match="unknown layer_type"):
        get_act_name("h", 0, "attn")
    with pytest.raises(ValueError, match="not a per-block hook"):
        in_layer("hook_embed", 0)

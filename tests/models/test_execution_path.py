"""The execution path: one Literal, one check, a default set only through `set_default_path`."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from workbench.models.paths import PATHS, ExecutionPath, check_path

from .conftest import small_lm


def test_the_literal_is_the_one_list_of_paths():
    assert PATHS == get_args(ExecutionPath) == ("reference", "fused")
    assert [check_path(p) for p in PATHS] == list(PATHS)


@pytest.mark.parametrize("bad", ["turbo", "", None, "Fused"])
def test_an_unknown_path_is_a_value_error_naming_the_allowed_values(bad):
    with pytest.raises(ValueError, match=r"unknown path .*'reference' or 'fused'"):
        check_path(bad)


def test_model_and_mixer_refuse_an_unknown_path_the_same_way():
    model = small_lm("gru")
    tokens = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match=r"'reference' or 'fused'"):
        model(tokens, path="turbo")
    with pytest.raises(ValueError, match=r"'reference' or 'fused'"):
        model.blocks[0].mixer(torch.zeros(1, 2, model.cfg.d_model, dtype=torch.float64), None, "turbo")


def test_the_default_path_is_set_only_through_its_method():
    model = small_lm("lstm")
    assert model.path == "fused"
    with pytest.raises(AttributeError):
        model.path = "reference"
    with pytest.raises(ValueError, match=r"'reference' or 'fused'"):
        model.set_default_path("turbo")
    assert model.path == "fused"
    model.set_default_path("reference")
    _, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
    assert cache.metadata["path"] == "reference"
    assert set(cache.metadata["kernels"].values()) == {"reference loop"}
    _, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]), path="fused")  # a call's path wins
    assert cache.metadata["path"] == "fused"

"""The docs' real-checkpoint example, run where the files are on this machine, skipped otherwise."""

from __future__ import annotations

import os

import pytest
import torch

from workbench.adapters import from_transformers


def test_a_real_local_checkpoint_matches_its_library_model():
    directory = os.environ.get("WORKBENCH_HF_CHECKPOINT")
    if not directory or not os.path.isdir(directory):
        pytest.skip("set WORKBENCH_HF_CHECKPOINT to a downloaded checkpoint directory, e.g. after "
                    "`huggingface-cli download state-spaces/mamba-130m-hf --local-dir ./mamba-130m-hf`")
    model = from_transformers(directory)
    assert model.tokenizer is not None, "the checkpoint directory has no tokenizer files"
    tokens = model.to_tokens("The quick brown fox jumps")
    with torch.no_grad():
        expected = model.hf_model(tokens).logits
        for path in ("reference", "fused"):
            torch.testing.assert_close(model(tokens, path=path).float(), expected, atol=1e-4, rtol=1e-4)
    assert len(model.to_str_tokens(tokens)) == tokens.shape[1]


REAL_CHECKPOINTS = {  # hub id -> environment variable that may point at a downloaded copy
    "google/recurrentgemma-2b": "WORKBENCH_RECURRENTGEMMA_CHECKPOINT",
    "NX-AI/xLSTM-7b": "WORKBENCH_XLSTM_CHECKPOINT",
}


@pytest.mark.parametrize("repo_id", sorted(REAL_CHECKPOINTS))
def test_real_recurrent_gemma_and_xlstm_checkpoints_match_their_library_models(repo_id):
    """Runs where the files are here (the variable's directory or the local Hugging Face cache); never downloads."""
    from workbench.adapters import CheckpointNotFoundError

    variable = REAL_CHECKPOINTS[repo_id]
    source = os.environ.get(variable) or repo_id
    try:
        model = from_transformers(source)
    except CheckpointNotFoundError as missing:
        pytest.skip(f"{repo_id} is not on this machine (set {variable} to a downloaded copy): {missing}")
    tokens = model.to_tokens("The quick brown fox jumps")
    with torch.no_grad():
        expected = model.hf_model(tokens).logits.float()
        for path in ("reference", "fused"):
            torch.testing.assert_close(model(tokens, path=path).float(), expected, atol=1e-4, rtol=1e-4)

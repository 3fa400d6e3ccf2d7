"""Hugging Face models build and open from the repository root, where the root is first on sys.path
(the README's `python -m pytest`, a user's script or notebook kept in the clone). transformers imports
PyPI's `kernels` when it builds a model; the repository must never shadow it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ["mamba", "mamba2", "rwkv", "recurrent_gemma", "xlstm"]

PROBE = f"""
import json, sys
import kernels, workbench
from tests.adapters.conftest import tiny, tokens
opened = {{}}
for family in {FAMILIES!r}:
    model = workbench.from_transformers(tiny(family))
    logits, cache = model.run_with_cache(tokens(1, 6))
    opened[family] = [list(logits.shape), len(cache)]
print(json.dumps({{"sys_path0": sys.path[0], "kernels": kernels.__file__, "opened": opened}}))
"""


def test_tiny_transformers_models_open_with_the_working_directory_at_the_repository_root():
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts["sys_path0"] in ("", str(ROOT)), "the probe must run with the repository root first on sys.path"
    assert not Path(facts["kernels"]).resolve().is_relative_to(ROOT / "kernels"), facts["kernels"]
    assert "site-packages" in facts["kernels"], facts["kernels"]
    assert sorted(facts["opened"]) == sorted(FAMILIES)
    for family, (shape, n_hooks) in facts["opened"].items():
        assert shape[:2] == [1, 6] and n_hooks > 0, (family, shape, n_hooks)

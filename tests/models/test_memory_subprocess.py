"""The issue-19 call at a tenth of its size, in a fresh process under a small budget: the unbounded
call is refused at once, and `model.score` streams it with peak RSS under the budget plus a margin."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MIB = 2**20
BUDGET = 96 * MIB
# What a streamed call holds beside the estimated window: the ids and log-probs of the whole input
# (200,000 x 12 bytes), the sink's running sums, tqdm and allocator slack.
MARGIN = 24 * MIB
LENGTH = 200_000  # the call was 2,000,000 characters

SCRIPT = r"""
import json, sys, sysconfig, pathlib, torch, workbench
from workbench.errors import MemoryBudgetError
from workbench.rss import current_rss, peak_rss, reset_peak_rss

budget, length = int(sys.argv[1]), int(sys.argv[2])
hook = "blocks.1.mixer.hook_c"
torch.set_num_threads(1)
model = workbench.load("lstm-stdlib-2x128")  # the default
known = set(model.tokenizer.chars)
text = ""
for source in sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
    text += "".join(c for c in source.read_text(errors="ignore") if c in known)
    if len(text) >= length:
        break
text = text[:length]
workbench.set_memory_budget(budget)
model.score(text[:5000], window=1000, names_filter=hook, sink=lambda start, cache: None)  # warm up

before = current_rss(); reset_peak_rss()
try:
    model.run_with_cache(text, names_filter=hook)
    refusal = None
except MemoryBudgetError as error:
    refusal = str(error)
refusal_peak = peak_rss() - before

total = torch.zeros(128, dtype=torch.float64)
def sink(start, cache):
    total.add_(cache[hook][0].double().sum(0))  # [d_hidden]: a running sum, constant memory
before = current_rss(); reset_peak_rss()
scored = model.score(text, names_filter=hook, sink=sink)
stream_peak = peak_rss() - before
print(json.dumps({"refusal": refusal, "refusal_peak": refusal_peak, "stream_peak": stream_peak,
                  "loss": scored.loss, "window": scored.window, "n_windows": scored.n_windows,
                  "positions": scored.log_probs.shape[1] + 1, "mean_c": float(total.abs().mean() / length)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak RSS from /proc")
def test_long_call_is_refused_at_once_and_streams_under_the_budget():
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(BUDGET), str(LENGTH)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    refusal = result["refusal"]
    assert refusal is not None, "the unbounded call was not refused"
    assert "run_with_cache recording 1 hook over 1 x 200,000 positions" in refusal
    assert "autograd graph" in refusal and "torch.no_grad()" in refusal and "model.score(tokens, window=" in refusal
    assert result["refusal_peak"] < 16 * MIB, result  # refused before running: only the ids were made
    assert result["n_windows"] > 1 and result["positions"] == LENGTH
    assert 0.5 < result["loss"] < 3.0 and result["mean_c"] > 0  # a trained model on real code
    assert result["stream_peak"] <= BUDGET + MARGIN, (
        f"streamed peak {result['stream_peak'] / MIB:.1f} MiB over budget {BUDGET / MIB:.0f} MiB "
        f"+ margin {MARGIN / MIB:.0f} MiB"
    )

"""Peak memory of a forward pass, estimated before it runs and measured in a fresh process (issue 19).

Each measurement is one subprocess: load the model, warm it up on 64 tokens (kernels compiled and
loaded, recording pool primed), reset the kernel's peak-RSS counter, run the call, read the peak.
"measured" is that peak minus the RSS just before the call; "estimate" is
`model.estimate_memory(...)`'s total for the same call, which the memory guard compares with the
budget. Prints a markdown table (estimate / measured >= 1 means the guard is on the safe side).
Run: python benchmarks/bench_memory.py [--lengths 20000 100000 200000] [--out table.md]
     python benchmarks/bench_memory.py --fit          (the PEAK_TERMS of workbench/models/memory.py)
     python benchmarks/bench_memory.py --issue 2000000 (issue 19's call: refused, then streamed)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.models.language_model import HookedLanguageModel

MIB = 2**20
DEFAULT_MODEL = "lstm-stdlib-2x128"
HOOK = "blocks.1.mixer.hook_c"


@dataclass(frozen=True)
class Case:
    """One call to measure: model (embedded name, or family:layers:d_model:d_hidden with vocab 154)."""

    model: str
    length: int
    path: str = "fused"
    grad: bool = True
    call: str = "cache"  # cache: run_with_cache(names) | forward: model(...) | score: model.score(...)
    names: str = HOOK  # "", "all" or comma-separated hook names
    return_type: str | None = "logits"
    window: int | None = None

    def label(self) -> str:
        names = "none" if not self.names else ("all" if self.names == "all" else self.names)
        extra = f", window {self.window}" if self.window else ""
        return (f"{self.model} | {self.length:,} | {self.path} | {'on' if self.grad else 'off'} | "
                f"{self.call}({names}{extra}) | {self.return_type}")


def build(spec: str) -> HookedLanguageModel:
    """An embedded model by name, or a random one `family:layers:d_model:d_hidden` (vocab 154)."""
    import workbench
    from workbench.models import HookedRecurrentLM, RecurrentConfig

    if ":" not in spec:
        return workbench.load(spec)
    family, layers, d_model, d_hidden = spec.split(":")
    return HookedRecurrentLM(RecurrentConfig(family=family, n_layers=int(layers), d_model=int(d_model),
                                             d_hidden=int(d_hidden), d_vocab=154))


def probe(case: Case) -> dict:
    """In this (fresh) process: run `case` once and return the measured and estimated bytes."""
    import contextlib

    import torch

    from workbench.rss import current_rss, peak_rss, reset_peak_rss

    torch.set_num_threads(1)
    model = build(case.model)
    names = None if case.names == "all" else [n for n in case.names.split(",") if n]
    tokens = torch.randint(0, model.cfg.d_vocab, (1, case.length), generator=torch.Generator().manual_seed(0))

    def run(t: torch.Tensor):
        grad = contextlib.nullcontext() if case.grad else torch.no_grad()
        with grad:
            if case.call == "forward":
                return model(t, path=case.path, return_type=case.return_type)  # graph held, as a user's
            if case.call == "score":
                return model.score(t, window=case.window, names_filter=names or None, path=case.path,
                                   sink=lambda start, cache: None)
            return model.run_with_cache(t, names_filter=names if names is not None else None,
                                        path=case.path, return_type=case.return_type)

    run(tokens[:, :64])
    estimate = None
    if hasattr(model, "estimate_memory") and case.call != "score":
        grad = contextlib.nullcontext() if case.grad else torch.no_grad()
        with grad:
            est = model.estimate_memory(tokens, names_filter=names if case.call == "cache" else [],
                                        return_type=case.return_type, path=case.path)
        estimate = {"total": est.total, "parts": est.parts}
    import gc

    gc.collect()
    before = current_rss()
    reset_peak_rss()
    out = run(tokens)
    peak = peak_rss()
    del out
    return {"before": before, "peak": peak, "measured": peak - before, "estimate": estimate}


def per_position(case: Case, result: dict) -> tuple[float, int, int]:
    """(measured bytes per position beyond the recording, activation bytes per position, layers)."""
    from workbench.models.memory import _model_widths

    model = build(case.model)
    names = [n for n in case.names.split(",") if n] if case.names != "all" else list(model.hook_dict)
    recording = model.recording_bytes(1, case.length, names) if case.call == "cache" else 0
    widths = _model_widths(model)
    return (result["measured"] - recording) / case.length, widths.activation, widths.n_layers


def fit_family(small: tuple[float, int, int], large: tuple[float, int, int]) -> tuple[float, float]:
    """(factor, bytes per layer and position) with m = factor x activation + step x layers through both."""
    (m1, a1, l1), (m2, a2, l2) = small, large
    det = a1 * l2 - a2 * l1
    factor = (m1 * l2 - m2 * l1) / det if det else m2 / a2
    step = (m2 - factor * a2) / l2
    if step < 0 or factor < 0:  # noise: put it all on the widths
        factor, step = max(m1 / a1, m2 / a2), 0.0
    return factor, step


FIT_MODELS = {  # family -> (a narrow model, the embedded model's widths), to separate the two terms
    "elman": ("elman:2:16:16", "elman:2:128:128"), "lstm": ("lstm:2:16:16", "lstm:2:128:128"),
    "gru": ("gru:2:16:16", "gru:2:128:128"), "mingru": ("mingru:2:16:16", "mingru:4:128:192"),
    "minlstm": ("minlstm:2:16:16", "minlstm:4:128:192"), "s6": ("s6:2:16:32", "s6:4:96:192"),
}
FIT_HOOK = {"lstm": "c", "s6": "state"}


def fit(lengths: dict[str, int]) -> dict[tuple[str, str, bool], tuple[float, float]]:
    """Measure both widths of every family, path and grad mode; return the fitted terms."""
    table = {}
    for family, specs in FIT_MODELS.items():
        for path in ("fused", "reference"):
            for grad in (False, True):
                points = []
                for spec in specs:
                    case = Case(spec, lengths[path], path, grad, "cache",
                                f"blocks.1.mixer.hook_{FIT_HOOK.get(family, 'h')}", "logits")
                    points.append(per_position(case, measure(case)))
                table[family, path, grad] = fit_family(*points)
                print(family, path, grad, table[family, path, grad], flush=True)
    return table


def measure(case: Case) -> dict:
    """Run `probe(case)` in a fresh interpreter and return its result."""
    done = subprocess.run([sys.executable, __file__, "--probe", json.dumps(case.__dict__)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["killed"])[-1], "rc": done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


ISSUE_CALL = r"""
import json, sys, sysconfig, pathlib, time, torch, workbench
from workbench.errors import MemoryBudgetError
from workbench.models.cache import memory_budget
from workbench.rss import current_rss, peak_rss, reset_peak_rss

length, hook = int(sys.argv[1]), "blocks.1.mixer.hook_c"
model = workbench.load("lstm-stdlib-2x128")
known, parts = set(model.tokenizer.chars), []
for source in sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
    parts.append("".join(c for c in source.read_text(errors="ignore") if c in known))
    if sum(map(len, parts)) >= length:
        break
text = "".join(parts)[:length]
model.score(text[:5000], window=1000)  # warm up
out = {"budget": memory_budget("cpu")}
before = current_rss(); reset_peak_rss(); start = time.perf_counter()
try:
    model.run_with_cache(text, names_filter=hook)
    out["refusal"] = None
except MemoryBudgetError as error:
    out["refusal"] = str(error)
out["refusal_s"], out["refusal_peak"] = time.perf_counter() - start, peak_rss() - before
total = torch.zeros(128, dtype=torch.float64)
before = current_rss(); reset_peak_rss(); start = time.perf_counter()
scored = model.score(text, names_filter=hook, sink=lambda s, c: total.add_(c[hook][0].double().sum(0)))
out.update(score_s=time.perf_counter() - start, score_peak=peak_rss() - before, loss=scored.loss,
           window=scored.window, n_windows=scored.n_windows, rss_before=before)
print(json.dumps(out))
"""


def issue_call(length: int) -> dict:
    """The issue's call (run_with_cache on `length` characters, one hook) and its streamed route, fresh process."""
    done = subprocess.run([sys.executable, "-c", ISSUE_CALL, str(length)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:], "rc": done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


def accuracy_rows(models: list[str], lengths: dict[str, list[int]]) -> list[str]:
    """One markdown row per measured call: estimate, measured peak, their ratio."""
    lines = ["| model | length | path | grad | call | return_type | estimate MiB | measured MiB | estimate/measured |",
             "|---|---:|---|---|---|---|---:|---:|---:|"]
    for model in models:
        paths = ("fused", "reference") if model == DEFAULT_MODEL else ("fused",)
        hook = HOOK if model.startswith("lstm") else "blocks.1.mixer.hook_h"
        if model.startswith("s6"):
            hook = "blocks.1.mixer.hook_state"
        for path in paths:
            for length in lengths[path]:
                for grad in (True, False):
                    for call, names, return_type in (("cache", hook, "logits"), ("forward", "", "loss")):
                        case = Case(model, length, path, grad, call, names, return_type)
                        result = measure(case)
                        if "error" in result:
                            row = f"| {case.label()} | {result['error']} | | |"
                        else:
                            est = result["estimate"]["total"]
                            row = (f"| {case.label()} | {est / MIB:,.0f} | {result['measured'] / MIB:,.0f} | "
                                   f"{est / max(result['measured'], 1):.2f} |")
                        print(row, flush=True)
                        lines.append(row)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--fit", action="store_true", help="measure two widths per family; print PEAK_TERMS")
    parser.add_argument("--issue", type=int, metavar="CHARS", help="run the issue's call at CHARS characters")
    parser.add_argument("--lengths", type=int, nargs="+", default=[20_000, 100_000, 200_000])
    parser.add_argument("--reference-lengths", type=int, nargs="+", default=[10_000, 40_000])
    parser.add_argument("--models", nargs="+", default=[DEFAULT_MODEL, "mingru-stdlib-4x128", "s6-stdlib-4x96"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(Case(**json.loads(args.probe)))))
        return
    if args.fit:
        fit({"fused": 20_000, "reference": 10_000})
        return
    if args.issue:
        print(json.dumps(issue_call(args.issue), indent=1))
        return
    lines = accuracy_rows(args.models, {"fused": args.lengths, "reference": args.reference_lengths})
    if args.out:
        with open(args.out, "w") as out:
            out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

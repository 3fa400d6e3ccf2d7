"""Recording throughput of the activation store, side by side in one run (issue 22 part 1).

On the default embedded model (lstm-stdlib-2x128), 1 thread, fused path, the corpus the first
`--chars` characters of the Python standard library's sources, prints:
  disk        : this disk's sequential write speed (64 MiB blocks, fsync at the end): the physical limit
  forward     : tokens/s of a plain forward (return_type=None) over the same batch layout as the store
                (rows of `--segment` tokens, `--rows` rows per batch, 2,048-position windows, state carried)
  record raw  : tokens/s and MB/s written recording `--hooks` raw in float16 (no reductions)
  reductions  : tokens/s recording moments, top-k and histograms of the same hooks (no raw tensors)
  (part "raw": these three interleaved on `--chars` characters, best of `--repeats`, so load hits all alike)
  reduced     : (part "reduced") the reductions over `--reduce-chars` characters, with this process's
                peak RSS above its baseline: memory must not grow with the corpus
Run: python benchmarks/bench_record.py [--chars 1000000 --reduce-chars 50000000 --out /tmp/bench-store]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sysconfig
import time

import torch

import workbench
from workbench.rss import current_rss, peak_rss, reset_peak_rss

MODEL = "lstm-stdlib-2x128"


def corpus_file(chars: int, target: pathlib.Path) -> pathlib.Path:
    """The first `chars` characters of the stdlib's .py files (repeated if it is shorter), as one file."""
    sources = sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    written = 0
    with target.open("w", encoding="utf-8") as handle:
        while written < chars:
            for source in sources:
                text = source.read_text(errors="ignore")[: chars - written]
                handle.write(text)
                written += len(text)
                if written >= chars:
                    break
    return target


def disk_write_speed(directory: pathlib.Path, total: int = 2**30) -> float:
    """Bytes/s of a sequential write of `total` random bytes, flushed to disk."""
    block = os.urandom(64 * 2**20)
    path = directory / "disk-speed.bin"
    start = time.perf_counter()
    with path.open("wb") as handle:
        for _ in range(total // len(block)):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return total / seconds


@torch.no_grad()
def forward_speed(model: workbench.HookedRecurrentLM, tokens: torch.Tensor, rows: int, segment: int) -> float:
    """Tokens/s of plain forwards in the store's layout: rows of `segment` tokens, 2,048-position windows."""
    usable = tokens[: tokens.shape[0] // (rows * segment) * rows * segment]
    if usable.numel() == 0:
        raise SystemExit(f"--chars must be at least --rows x --segment = {rows * segment:,} for the forward")
    start = time.perf_counter()
    for group in usable.view(-1, rows, segment):  # [rows, segment]
        state = None
        for w in range(0, segment, 2048):
            _, state = model(group[:, w : w + 2048], initial_state=state, return_state=True, return_type=None)
    return usable.numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=5_000_000)
    parser.add_argument("--reduce-chars", type=int, default=50_000_000)
    parser.add_argument("--segment", type=int, default=16_384)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--hooks", nargs="+", default=["blocks.1.mixer.hook_c"])
    parser.add_argument("--out", default="/tmp/bench-store")
    parser.add_argument("--parts", nargs="+", default=["raw", "reduced"], choices=("raw", "reduced"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = pathlib.Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    model = workbench.load(MODEL)
    settings = dict(segment_tokens=args.segment, segments_per_shard=args.rows)
    small = corpus_file(args.chars, out / "corpus.txt")
    workbench.record(model, [corpus_file(50_000, out / "warm.txt")], out / "warm", args.hooks, **settings)

    common = {"model": MODEL, "hooks": args.hooks, "segment": args.segment, "rows": args.rows,
              "torch": torch.__version__, "cpus": os.cpu_count()}
    if "raw" in args.parts:  # the ratios: forward, raw recording and reductions interleaved, best of --repeats
        disk = max(disk_write_speed(out) for _ in range(2))
        tokens = model.tokenizer.encode(small.read_text(encoding="utf-8"), unknown="map")
        best = {"forward": 0.0, "raw": 0.0, "reductions": 0.0}
        written = 0
        for _ in range(args.repeats):
            best["forward"] = max(best["forward"], forward_speed(model, tokens, args.rows, args.segment))
            start = time.perf_counter()
            store = workbench.record(model, [small], out / "raw", args.hooks, dtype="float16", **settings)
            best["raw"] = max(best["raw"], store.n_tokens / (time.perf_counter() - start))
            written = sum((store.directory / s["file"]).stat().st_size for s in store.shards)
            shutil.rmtree(out / "raw")
            start = time.perf_counter()
            store = workbench.record(model, [small], out / "red", args.hooks, raw=False,
                                     reductions=("moments", "topk", "histogram"), **settings)
            best["reductions"] = max(best["reductions"], store.n_tokens / (time.perf_counter() - start))
            shutil.rmtree(out / "red")
        raw_bytes_per_s = written / store.n_tokens * best["raw"]
        print(json.dumps({**common, "part": "ratios", "chars": args.chars, "repeats": args.repeats,
                          "disk_bytes_per_s": disk, "tokens_per_s": best, "raw_bytes_written": written,
                          "raw_bytes_per_s": raw_bytes_per_s,
                          "raw_over_forward": best["raw"] / best["forward"],
                          "reductions_over_forward": best["reductions"] / best["forward"],
                          "raw_write_over_disk": raw_bytes_per_s / disk, "load_average": os.getloadavg()}),
              flush=True)
    if "reduced" in args.parts:
        big = corpus_file(args.reduce_chars, out / "big.txt")
        tokens = model.tokenizer.encode(small.read_text(encoding="utf-8"), unknown="map")
        forward = forward_speed(model, tokens, args.rows, args.segment)  # the same run's plain forward
        del tokens
        before = current_rss()
        reset_peak_rss()
        start = time.perf_counter()
        reduced = workbench.record(model, [big], out / "reduced", args.hooks, raw=False,
                                   reductions=("moments", "topk", "histogram"), **settings)
        seconds = time.perf_counter() - start
        print(json.dumps({**common, "part": "reduced", "chars": reduced.n_tokens,
                          "tokens_per_s": reduced.n_tokens / seconds, "seconds": seconds,
                          "forward_tokens_per_s": forward, "reduced_over_forward": reduced.n_tokens / seconds / forward,
                          "peak_rss_above_baseline_bytes": peak_rss() - before, "baseline_rss_bytes": before,
                          "load_average": os.getloadavg()}), flush=True)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

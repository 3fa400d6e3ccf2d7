"""CPU fast paths against their references and against what users would run instead, in one run.

Sections (every ratio measured side by side in the same run, candidates interleaved, medians):

  A. each family: the reference loop / the fused path, both recording every hook (mixer level);
  B. LSTM / GRU: recording every gate / the plain library forward (torch.nn.LSTM / GRU, no hooks),
     for the mixer (both sides add the same output projection W_out) and for the kernel alone;
  C. S6: transformers' own PyTorch Mamba path (MambaMixer.forward without CUDA kernels, the
     "slow" path) / our S6 mixer recording every hook, same weights (outputs compared);
  D. minGRU recurrence: the readable per-step loop / the PyTorch chunked scan, the compiled C++
     linear scan and the compiled gates + scan kernel the mixer dispatches to on CPU;
  E. peak memory per recorded token / the bytes per token the cache itself holds.

Timing: with --threads 1 (default) the clock is the process's CPU time (user + system), which
another job on a shared machine does not inflate the way it inflates wall time; the wall-clock
ratio is printed beside it. Page faults count (system time): every recording writes fresh memory.
Combinations whose reference would take longer than --budget seconds per call (estimated from a
short prefix) or need more than half the available memory are printed as skipped, with the estimate.

    python benchmarks/bench_cpu.py            # the full grid (lengths 256/1024/4096, batch 1/16, width 256/1024)
    python benchmarks/bench_cpu.py --quick    # small grid, a couple of minutes
Output goes to stdout and to benchmarks/cpu_results.md (--out).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from workbench.kernels import g, linear_scan
from workbench.kernels.buffers import recording_buffer
from workbench.kernels.cpu_compiled import compiled_kernels_available, compiled_linear_scan, compiled_mingru_gates_scan
from workbench.kernels.dispatch import use_recording_loop
from workbench.kernels.rnn_gates import gru_gates_from_hidden, lstm_gates_from_hidden
from workbench.kernels.rnn_recording import gru_forward_recording, lstm_forward_recording
from workbench.models.config import RecurrentConfig
from workbench.models.mixers import MIXERS
from workbench.models.recurrence import record_every_hook

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers must not reach for hub kernels
FAMILIES = ("elman", "lstm", "gru", "mingru", "minlstm", "s6")
LINES: list[str] = []
OUT: list[Path] = []  # the markdown file, rewritten after every line so a long run can be read as it goes


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)
    for path in OUT:
        path.write_text("\n".join(LINES) + "\n")


def clock(threads: int) -> Callable[[], float]:
    return time.process_time if threads == 1 else time.perf_counter


def measure(
    fns: dict[str, Callable[[], object]], repeats: int, threads: int,
    setup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, tuple[float, float]]:
    """Median (clock seconds, wall seconds) of each fn over `repeats` interleaved rounds, after one warm-up.
    setup[name], when given, runs (untimed) before every call of fns[name]: e.g. restoring inputs a kernel
    overwrites."""
    tick = clock(threads)
    setup = setup or {}
    for name, fn in fns.items():
        if name in setup:
            setup[name]()
        fn()
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if name in setup:
                setup[name]()
            gc.collect()
            c0, w0 = tick(), time.perf_counter()
            fn()
            cpu[name].append(tick() - c0)
            wall[name].append(time.perf_counter() - w0)
    return {k: (statistics.median(cpu[k]), statistics.median(wall[k])) for k in fns}


def estimate(fn_at: Callable[[int], Callable[[], object]], length: int, threads: int, probe: int = 64) -> float:
    """Seconds one call would take at `length`, from a timed call at `probe` positions (linear in length)."""
    probe = min(probe, length)
    fn = fn_at(probe)
    fn()
    tick = clock(threads)
    start = tick()
    fn()
    return (tick() - start) * length / probe


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 8 << 30


def mixer_for(family: str, width: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    d_hidden = 2 * width if family == "s6" else width  # Mamba's expand = 2
    cfg = RecurrentConfig(family=family, n_layers=1, d_model=width, d_hidden=d_hidden, d_vocab=2, d_state=16)
    return MIXERS[family](cfg).eval()


def recording_call(mixer: nn.Module, x: torch.Tensor, path: str) -> tuple[Callable[[], object], dict]:
    """A no-grad call of `mixer` on `path` with a read-only recorder on every hook point; the
    recorder is attached once per mixer and its store is shared by every call made here."""
    store = getattr(mixer, "_bench_store", None)
    if store is None:
        store = mixer._bench_store = {}
        record_every_hook(mixer, store)

    def run() -> object:
        store.clear()
        with torch.no_grad():
            return mixer(x, None, path)

    return run, store


def cache_bytes_per_token(store: dict[str, torch.Tensor], tokens: int) -> float:
    """Bytes per token of every recorded per-position tensor (distinct storages counted once)."""
    seen, total = set(), 0
    for name, t in store.items():
        if "initial" in name:
            continue
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total / tokens


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}x"


def state_bytes(family: str, batch: int, length: int, width: int) -> int:
    """Rough bytes the biggest side of a comparison allocates (for skipping what cannot fit)."""
    if family == "s6":
        return 4 * batch * length * 2 * width * 16 * 3  # transformers holds three [b, d, pos, n] tensors
    return 4 * batch * length * width * 12


# --------------------------------------------------------------------------- A. fused vs reference
def section_families(grid, args) -> None:
    say("\n## A. Each family: reference loop / fused path, both recording every hook (mixer level)\n")
    say("| family | batch | pos | width | fused kernel | ref/fused (cpu) | ref/fused (wall) | max abs diff |")
    say("|---|---|---|---|---|---|---|---|")
    for family in args.families:
        for batch, length, width in grid:
            if state_bytes(family, batch, length, width) / 3 > available_bytes() / 2:
                say(f"| {family} | {batch} | {length} | {width} | | skipped (needs memory) | | |")
                continue
            mixer = mixer_for(family, width)
            x = torch.randn(batch, length, width)

            def ref_at(pos, mixer=mixer, x=x):
                return recording_call(mixer, x[:, :pos], "reference")[0]

            est = estimate(ref_at, length, args.threads)
            if est > args.budget:
                say(f"| {family} | {batch} | {length} | {width} | "
                    f"| skipped (est. {est:.0f} s per reference call) | | |")
                continue
            ref, ref_store = recording_call(mixer, x, "reference")
            ref()
            ref_values = {k: v.clone() for k, v in ref_store.items()}
            fused, fused_store = recording_call(mixer, x, "fused")
            fused()
            kernel = mixer.last_kernel
            diff = max((fused_store[k] - ref_values[k]).abs().max().item() for k in ref_values)
            del ref_values
            t = measure({"ref": ref, "fused": fused}, args.repeats, args.threads)
            say(f"| {family} | {batch} | {length} | {width} | {kernel} | {fmt_ratio(t['ref'][0] / t['fused'][0])} "
                f"| {fmt_ratio(t['ref'][1] / t['fused'][1])} | {diff:.1e} |")
            del mixer, x, ref, fused, ref_store, fused_store
            gc.collect()


# --------------------------------------------------------------------------- B. LSTM/GRU vs library
def section_library_rnn(grid, args) -> None:
    say("\n## B. LSTM / GRU: recording every gate / the plain library forward (target <= 1.3x)\n")
    say("mixer: our fused mixer with every hook recorded / `cell(x)` + the same `W_out`; "
        "kernel: the gate-recording kernel the mixer dispatches to / `torch.nn.LSTM|GRU(x)` alone.\n")
    say("| family | batch | pos | width | recording kernel | mixer record/plain (cpu) | kernel record/plain (cpu) "
        "| kernel record/plain (wall) |")
    say("|---|---|---|---|---|---|---|---|")
    for family in ("lstm", "gru"):
        for batch, length, width in grid:
            mixer = mixer_for(family, width)
            x = torch.randn(batch, length, width)
            h0 = torch.zeros(batch, width)
            weights = mixer.weights
            cell = mixer.cell

            def plain_at(pos, cell=cell, x=x):
                def run():
                    with torch.no_grad():
                        return cell(x[:, :pos])
                return run

            est = estimate(plain_at, length, args.threads) * 3
            if est > args.budget:
                say(f"| {family} | {batch} | {length} | {width} | | skipped (est. {est:.0f} s per call) | | |")
                continue
            with torch.no_grad():
                loop = use_recording_loop(x, mixer.cfg.d_hidden, mixer.parameters())

            def kernel_record(x=x, h0=h0, weights=weights, cell=cell, family=family, loop=loop):
                with torch.no_grad():
                    if family == "lstm":
                        if loop:
                            return lstm_forward_recording(x, h0, h0, *weights)
                        h, _ = cell(x)
                        return lstm_gates_from_hidden(x, h, h0, h0, *weights)
                    if loop:
                        return gru_forward_recording(x, h0, *weights)
                    h, _ = cell(x)
                    return gru_gates_from_hidden(x, h, h0, *weights)

            def plain_mixer(cell=cell, x=x, mixer=mixer):
                with torch.no_grad():
                    return mixer.W_out(cell(x)[0])

            record_mixer, _ = recording_call(mixer, x, "fused")
            record_mixer()
            kernel = mixer.last_kernel
            t = measure({"plain": plain_at(length), "kernel": kernel_record, "plain_mixer": plain_mixer,
                         "record_mixer": record_mixer}, args.repeats, args.threads)
            say(f"| {family} | {batch} | {length} | {width} | {kernel} "
                f"| {fmt_ratio(t['record_mixer'][0] / t['plain_mixer'][0])} "
                f"| {fmt_ratio(t['kernel'][0] / t['plain'][0])} | {fmt_ratio(t['kernel'][1] / t['plain'][1])} |")
            del mixer, x, cell
            gc.collect()


# --------------------------------------------------------------------------- C. S6 vs transformers
def transformers_mamba(ours: nn.Module) -> nn.Module | None:
    """transformers' MambaMixer with our S6 mixer's weights (None if transformers is missing)."""
    try:
        from transformers import MambaConfig
        from transformers.models.mamba.modeling_mamba import MambaMixer
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    hf_logging.set_verbosity_error()
    cfg = ours.cfg
    hf_cfg = MambaConfig(hidden_size=cfg.d_model, state_size=cfg.d_state, intermediate_size=cfg.d_hidden,
                         conv_kernel=cfg.d_conv, time_step_rank=cfg.dt_rank, use_bias=False, use_conv_bias=True)
    hf = MambaMixer(hf_cfg, 0).eval()
    with torch.no_grad():
        for name in ("in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                     "dt_proj.bias", "A_log", "D", "out_proj.weight"):
            hf.get_parameter(name).copy_(ours.get_parameter(name))
    return hf


def section_s6(grid, args) -> None:
    say("\n## C. S6 recording every hook / transformers MambaMixer PyTorch path (target: >= 5x faster)\n")
    say("| batch | pos | width (d_inner) | transformers/ours (cpu) | transformers/ours (wall) "
        "| max abs diff of outputs |")
    say("|---|---|---|---|---|---|")
    for batch, length, width in grid:
        need = state_bytes("s6", batch, length, width)
        if need > available_bytes() / 2:
            say(f"| {batch} | {length} | {width} ({2 * width}) | skipped (needs {need / 2**30:.1f} GiB) | | |")
            continue
        ours = mixer_for("s6", width)
        hf = transformers_mamba(ours)
        if hf is None:
            say("transformers is not installed: section skipped")
            return
        x = torch.randn(batch, length, width)

        def hf_at(pos, hf=hf, x=x):
            def run():
                with torch.no_grad():
                    return hf(x[:, :pos])
            return run

        est = estimate(hf_at, length, args.threads)
        if est > args.budget:
            say(f"| {batch} | {length} | {width} ({2 * width}) | skipped (est. {est:.0f} s per call) | | |")
            continue
        record, _ = recording_call(ours, x, "fused")
        out_ours = record()[0]
        with torch.no_grad():
            diff = (hf(x) - out_ours).abs().max().item()
        del out_ours
        t = measure({"hf": hf_at(length), "ours": record}, args.repeats, args.threads)
        say(f"| {batch} | {length} | {width} ({2 * width}) | {fmt_ratio(t['hf'][0] / t['ours'][0])} "
            f"| {fmt_ratio(t['hf'][1] / t['ours'][1])} | {diff:.1e} |")
        del ours, hf, x, record
        gc.collect()


# --------------------------------------------------------------------------- D. minGRU core
def naive_mingru(z: torch.Tensor, h_tilde: torch.Tensor) -> torch.Tensor:
    """The readable loop: h_t = (1 - z_t) h_{t-1} + z_t h̃_t, one position at a time."""
    h = torch.zeros_like(z[:, 0])
    hs = []
    for t in range(z.shape[1]):
        h = (1 - z[:, t]) * h + z[:, t] * h_tilde[:, t]
        hs.append(h)
    return torch.stack(hs, dim=1)


def section_mingru(grid, args) -> None:
    say("\n## D. minGRU recurrence: readable per-step loop / fused scan (target: >= 20x at pos 4096)\n")
    say("Every side starts from the pre-activations k = W_z x and v = W_h x (computed once, shared, not timed) "
        "and returns h. loop: z = σ(k), h̃ = g(v), then the readable per-position loop. torch scan: z, h̃, then "
        "the chunked PyTorch `linear_scan(1 - z, z h̃)`. compiled scan: z, h̃, then `compiled_linear_scan(1 - z, "
        "z h̃)` (the mixer's path when a hook may edit a gate). compiled gates+scan: `compiled_mingru_gates_scan` "
        "reads k and v from pooled buffers, writes z and h̃ over them and h into a fresh pooled buffer, in one "
        "pass (the mixer's default path on CPU without grad, where the projections write k and v into those "
        "buffers); k and v are copied back into the buffers before each call, untimed. 'one pass' = time of "
        "`z * h̃ + h̃` (one fresh output written), a floor for any scan.\n")
    say("| batch | pos | width | loop/torch scan (cpu) | loop/compiled scan (cpu) | loop/compiled gates+scan (cpu) "
        "| loop/compiled gates+scan (wall) | gates+scan / one pass | max abs diff |")
    say("|---|---|---|---|---|---|---|---|---|")
    compiled = compiled_kernels_available()
    for batch, length, width in grid:
        mixer = mixer_for("mingru", width)
        x = torch.randn(batch, length, width)
        with torch.no_grad():
            pre_z, pre_h = mixer.W_z(x), mixer.W_h(x)  # [batch, pos, width] each
            z, h_tilde = torch.sigmoid(pre_z), g(pre_h)

            def loop(pre_z=pre_z, pre_h=pre_h):
                return naive_mingru(torch.sigmoid(pre_z), g(pre_h))

            def torch_scan(pre_z=pre_z, pre_h=pre_h):
                z = torch.sigmoid(pre_z)
                return linear_scan(1 - z, z * g(pre_h))

            def compiled_scan(pre_z=pre_z, pre_h=pre_h):
                z = torch.sigmoid(pre_z)
                return compiled_linear_scan(1 - z, z * g(pre_h))

            k = recording_buffer(pre_z.shape, pre_z.dtype, "cpu")  # the projections' pooled buffers
            v = recording_buffer(pre_h.shape, pre_h.dtype, "cpu")

            def restore(k=k, v=v, pre_z=pre_z, pre_h=pre_h):
                k.copy_(pre_z)
                v.copy_(pre_h)

            def gates_scan(k=k, v=v):
                return compiled_mingru_gates_scan(k, v)[-1]

            def one_pass(z=z, h_tilde=h_tilde):
                return z * h_tilde + h_tilde

            fns = {"loop": loop, "torch": torch_scan, "one": one_pass}
            if compiled:
                fns |= {"compiled": compiled_scan, "gates": gates_scan}
            expected = loop()
            diff = 0.0
            for key, fn in fns.items():
                if key not in ("loop", "one"):
                    restore()
                    diff = max(diff, (fn() - expected).abs().max().item())
            del expected
            t = measure(fns, args.repeats, args.threads, setup={"gates": restore})
        if not compiled:
            say(f"| {batch} | {length} | {width} | {fmt_ratio(t['loop'][0] / t['torch'][0])} "
                f"| compiled kernels unavailable | | | | {diff:.1e} |")
            continue
        say(f"| {batch} | {length} | {width} | {fmt_ratio(t['loop'][0] / t['torch'][0])} "
            f"| {fmt_ratio(t['loop'][0] / t['compiled'][0])} | {fmt_ratio(t['loop'][0] / t['gates'][0])} "
            f"| {fmt_ratio(t['loop'][1] / t['gates'][1])} | {t['gates'][0] / t['one'][0]:.2f} | {diff:.1e} |")
        del mixer, x, pre_z, pre_h, z, h_tilde, k, v
        gc.collect()


# --------------------------------------------------------------------------- E. memory
def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set of this process: VmHWM (resettable) where /proc has it, else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(family: str, batch: int, length: int, width: int) -> None:
    """In a fresh process: peak RSS growth of one fused recording call / bytes the cache holds."""
    torch.set_num_threads(1)
    mixer = mixer_for(family, width)
    x = torch.randn(batch, length, width)
    warm, _ = recording_call(mixer, x[:, :4], "fused")  # load every code path at a negligible size
    warm()
    del warm
    gc.collect()
    with open("/proc/self/statm") as f:
        rss_before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak_reset = reset_peak_rss()
    peak_before = peak_rss_bytes()
    run, store = recording_call(mixer, x, "fused")
    out = run()
    peak_after = peak_rss_bytes()
    tokens = batch * length
    held = cache_bytes_per_token(store, tokens)
    print(json.dumps({"kernel": mixer.last_kernel, "peak_per_token": (peak_after - rss_before) / tokens,
                      "cache_per_token": held, "peak_grew": peak_reset or peak_after > peak_before,
                      "out": out[0].shape[0]}))


def section_memory(args) -> None:
    batch, length, width = args.memory_shape
    say(f"\n## E. Peak memory per recorded token / cache bytes per token (target <= 1.5x), "
        f"batch {batch}, pos {length}, width {width}\n")
    say("Measured in a fresh subprocess per family: the peak resident set (VmHWM, reset just before the "
        "call through /proc/self/clear_refs) during one fused recording call, minus the resident set just "
        "before it (after a 4-token warm-up call loaded every code path), divided by batch x pos; "
        "the cache bytes are the storages of every "
        "recorded tensor. It counts everything the call touched: input projections, temporaries, "
        "the module's output and allocator slack.\n")
    say("| family | kernel | peak bytes/token | cache bytes/token | peak/cache |")
    say("|---|---|---|---|---|")
    for family in args.families:
        cmd = [sys.executable, __file__, "--memory-child", family, str(batch), str(length), str(width)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            say(f"| {family} | failed: {result.stderr.strip().splitlines()[-1:]} | | | |")
            continue
        r = json.loads(result.stdout.strip().splitlines()[-1])
        grew = "" if r["peak_grew"] else " (peak not above warm-up: lower bound)"
        say(f"| {family} | {r['kernel']} | {r['peak_per_token']:.0f} | {r['cache_per_token']:.0f} "
            f"| {r['peak_per_token'] / r['cache_per_token']:.2f}x{grew} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="lengths 256/1024, width 256, a few minutes")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: CPU-time clock)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (median)")
    parser.add_argument("--budget", type=float, default=20.0, help="skip calls estimated above this many s")
    parser.add_argument("--lengths", type=int, nargs="*", default=None)
    parser.add_argument("--batches", type=int, nargs="*", default=None)
    parser.add_argument("--widths", type=int, nargs="*", default=None)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--family-lengths", type=int, nargs="*", default=None,
                        help="lengths for section A only (its reference loops dominate the run time)")
    parser.add_argument("--sections", default="ABCDE")
    parser.add_argument("--memory-shape", type=int, nargs=3, default=None, metavar=("BATCH", "POS", "WIDTH"))
    parser.add_argument("--out", default=str(Path(__file__).with_name("cpu_results.md")))
    parser.add_argument("--memory-child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        family, *sizes = args.memory_child
        memory_child(family, *map(int, sizes))
        return
    torch.set_num_threads(args.threads)
    OUT.append(Path(args.out))
    lengths = args.lengths or ([256, 1024] if args.quick else [256, 1024, 4096])
    batches = args.batches or [1, 16]
    widths = args.widths or ([256] if args.quick else [256, 1024])
    args.memory_shape = args.memory_shape or ([4, 256, 256] if args.quick else [16, 1024, 256])
    grid = [(b, p, w) for p in lengths for b in batches for w in widths]
    load = os.getloadavg()
    say("# CPU kernels: ratios measured side by side\n")
    say(f"`python benchmarks/bench_cpu.py {' '.join(sys.argv[1:])}`  \n"
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} cores, "
        f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min), "
        f"{available_bytes() / 2**30:.1f} GiB available, {args.repeats} interleaved rounds, medians; "
        f"clock: {'process CPU time' if args.threads == 1 else 'wall time'}.")
    started = time.perf_counter()
    family_grid = [(b, p, w) for p in (args.family_lengths or lengths) for b in batches for w in widths]
    sections = {"A": lambda: section_families(family_grid, args), "B": lambda: section_library_rnn(grid, args),
                "C": lambda: section_s6(grid, args), "D": lambda: section_mingru(grid, args),
                "E": lambda: section_memory(args)}
    for key in args.sections:
        sections[key]()
    load = os.getloadavg()
    say(f"\nTotal {time.perf_counter() - started:.0f} s; load average at end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f}.")


if __name__ == "__main__":
    main()

"""S6 recording every hook: transformers' PyTorch MambaMixer / our mixer, with and without the compiled
C++ selective scan, measured side by side in one run (issue #5 target: >= 5x faster than transformers).

For each (batch, width) at one length, three calls are interleaved (medians over --repeats rounds,
process CPU time at 1 thread): transformers' MambaMixer.forward without CUDA kernels (the "slow"
path, same weights), our S6 mixer on the fused path recording every hook with the PyTorch chunked
scan (WORKBENCH_NO_COMPILED=1 for that call), and the same with the compiled kernel. Also the scan
alone (every state written): PyTorch `selective_scan` / `compiled_selective_scan`. And a ceiling:
transformers / the mixer's four projections alone (in, x, dt, out: the matmuls both sides run
identically), the ratio a mixer would reach if everything else were free.

Section G: LSTM recording every gate / the plain torch.nn.LSTM forward (issue #5 target: <= 1.3x),
for the kernel alone (the compiled C++ loop and what ran before it: the Python gate-writing loop at
batch x width >= 4096, else torch.nn.LSTM + gate recovery) and for the mixer (every hook recorded /
`cell(x)` + the same W_out).

Section H: the same for the GRU (recording r, z, n, h / the plain torch.nn.GRU forward; target <= 1.3x).

Section I: the same for the Elman RNN (recording pre, h / the plain torch.nn.RNN forward).

    python benchmarks/bench_cpu_compiled.py                  # length 1024, batch 1/16, width 256/1024
    python benchmarks/bench_cpu_compiled.py --sections GH --lengths 256 1024 4096 --max-cells 2.2e7
    python benchmarks/bench_cpu_compiled.py --append          # also append the tables to cpu_results.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_cpu import measure, mixer_for, recording_call, transformers_mamba  # noqa: E402

from workbench.kernels.cpu_compiled import (  # noqa: E402
    DISABLE_ENV,
    compiled_elman_forward_recording,
    compiled_gru_forward_recording,
    compiled_kernels_available,
    compiled_lstm_forward_recording,
    compiled_selective_scan,
)
from workbench.kernels.dispatch import use_recording_loop  # noqa: E402
from workbench.kernels.rnn_gates import (  # noqa: E402
    elman_pre_from_hidden,
    gru_gates_from_hidden,
    lstm_gates_from_hidden,
)
from workbench.kernels.rnn_recording import (  # noqa: E402
    elman_forward_recording,
    gru_forward_recording,
    lstm_forward_recording,
)
from workbench.kernels.selective_scan import selective_scan  # noqa: E402


def with_compiled(fn, enabled: bool):
    """`fn` run with the compiled kernel switched on or off (the switch is read at each call)."""

    def run():
        previous = os.environ.get(DISABLE_ENV)
        os.environ[DISABLE_ENV] = "0" if enabled else "1"
        try:
            return fn()
        finally:
            if previous is None:
                os.environ.pop(DISABLE_ENV, None)
            else:
                os.environ[DISABLE_ENV] = previous

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="*", default=[1024])
    parser.add_argument("--max-cells", type=float, default=float("inf"),
                        help="skip sizes with batch x pos x width above this (the LSTM/GRU at 16 x 4096 x 1024 "
                             "takes ~20 s per call at 1 thread)")
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 16])
    parser.add_argument("--widths", type=int, nargs="*", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--append", action="store_true", help="append the tables to benchmarks/cpu_results.md")
    parser.add_argument("--sections", default="FGH",
                        help="F: S6 against transformers; G: LSTM recording; H: GRU recording; "
                             "I: Elman recording")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    available = compiled_kernels_available()
    build_s = time.perf_counter() - started
    lines: list[str] = []
    if "F" in args.sections:
        lines += section_s6(args, build_s, available)
    if "G" in args.sections:
        lines += section_classic("lstm", args, build_s, available)
    if "H" in args.sections:
        lines += section_classic("gru", args, build_s, available)
    if "I" in args.sections:
        lines += section_classic("elman", args, build_s, available)
    lines.append(f"\nTotal {time.perf_counter() - started:.0f} s; load average at end {os.getloadavg()[0]:.1f}.")
    print(lines[-1])
    if args.append:
        with open(Path(__file__).with_name("cpu_results.md"), "a") as f:
            f.write("\n".join(lines) + "\n")


def sizes(args) -> list[tuple[int, int, int]]:
    """(pos, batch, width) for every measured size, shortest sequences first."""
    return [(length, batch, width) for length in args.lengths for batch in args.batches for width in args.widths]


def section_s6(args, build_s: float, available: bool) -> list[str]:
    lines = [
        "\n## F. S6 with the compiled C++ selective scan: transformers MambaMixer / ours (target: >= 5x faster)\n",
        f"`python benchmarks/bench_cpu_compiled.py {' '.join(sys.argv[1:])}`  \n"
        f"torch {torch.__version__}, 1 thread, {os.cpu_count()} cores, load average at start "
        f"{os.getloadavg()[0]:.1f}, {args.repeats} interleaved rounds, medians of process CPU time; "
        f"kernel load/build {build_s:.1f} s (compiled kernel available: {available}).\n",
        "mixer: our S6 mixer on the fused path with every hook recorded (states included); "
        "scan: the scan alone with every state written.\n",
        "| batch | pos | width (d_inner) | HF/ours, chunked torch scan | HF/ours, compiled scan "
        "| mixer speed-up from compiled | scan torch/compiled | ceiling: HF/projections alone "
        "| max abs diff (compiled vs HF) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for length, batch, width in sizes(args):
        if batch * length * width > args.max_cells:  # transformers alone needs 24 GiB at 16 x 4096 x 1024
            lines.append(f"| {batch} | {length} | {width} ({2 * width}) | skipped (batch x pos x width > "
                         f"{args.max_cells:.3g}) | | | | | |")
            print(lines[-1], flush=True)
            continue
        ours = mixer_for("s6", width)
        hf = transformers_mamba(ours)
        if hf is None:
            print("transformers is not installed")
            return lines
        x = torch.randn(batch, length, width)
        record, _ = recording_call(ours, x, "fused")
        compiled, plain = with_compiled(record, True), with_compiled(record, False)
        out = compiled()[0]
        kernel = ours.last_kernel
        with torch.no_grad():
            diff = (hf(x) - out).abs().max().item()
            del out
            inputs, _, _ = ours._parallel_inputs(x, x.new_zeros(batch, 2 * width, ours.cfg.d_conv - 1))
            scan_args = (inputs["conv"], inputs["delta"], ours.A, inputs["B"], inputs["C"], ours.D, None)

            def hf_call(hf=hf, x=x):
                with torch.no_grad():
                    return hf(x)

            def projections(ours=ours, x=x, u=inputs["conv"]):
                with torch.no_grad():
                    y = ours.x_proj(u)  # [batch, pos, rank + 2n]
                    ours.dt_proj(y[..., : ours.cfg.dt_rank])
                    return ours.out_proj(ours.in_proj(x)[..., : u.shape[-1]])

            t = measure({"hf": hf_call, "torch": plain, "compiled": compiled, "proj": projections,
                         "scan_torch": lambda a=scan_args: selective_scan(*a, return_states=True),
                         "scan_compiled": lambda a=scan_args: compiled_selective_scan(*a, return_states=True)},
                        args.repeats, 1)
        line = (f"| {batch} | {length} | {width} ({2 * width}) | {t['hf'][0] / t['torch'][0]:.2f}x "
                f"| {t['hf'][0] / t['compiled'][0]:.2f}x | {t['torch'][0] / t['compiled'][0]:.2f}x "
                f"| {t['scan_torch'][0] / t['scan_compiled'][0]:.2f}x | {t['hf'][0] / t['proj'][0]:.2f}x "
                f"| {diff:.1e} |")
        lines.append(line)
        print(line, f"  [{kernel}; hf {t['hf'][0]:.2f} s, torch {t['torch'][0]:.3f} s, "
                    f"compiled {t['compiled'][0]:.3f} s]", flush=True)
        del ours, hf, x, record, compiled, plain, inputs, scan_args
    return lines


# Per family: (section letter, library name, recorded quantities, PyTorch loop, gate recovery, compiled loop,
# target). The LSTM kernels take (x, h0, c0, *weights); the GRU and Elman kernels (x, h0, *weights).
CLASSIC_SECTIONS = {
    "lstm": ("G", "LSTM", "", lstm_forward_recording, lstm_gates_from_hidden, compiled_lstm_forward_recording,
             "target <= 1.3x"),
    "gru": ("H", "GRU", " (r, z, n, h)", gru_forward_recording, gru_gates_from_hidden,
            compiled_gru_forward_recording, "target <= 1.3x"),
    "elman": ("I", "RNN", " (pre, h)", elman_forward_recording, elman_pre_from_hidden,
              compiled_elman_forward_recording, "Elman; no target of its own, section A compares paths"),
}


def section_classic(family: str, args, build_s: float, available: bool) -> list[str]:
    """Recording every gate of an LSTM or GRU / the plain torch.nn forward, before and with the compiled loop."""
    letter, library, quantities, loop_kernel, recovery, compiled_kernel, target = CLASSIC_SECTIONS[family]
    lines = [
        f"\n## {letter}. {library} recording every gate / plain torch.nn.{library} forward, compiled C++ loop "
        f"({target})\n",
        f"`python benchmarks/bench_cpu_compiled.py {' '.join(sys.argv[1:])}`  \n"
        f"torch {torch.__version__}, 1 thread, {os.cpu_count()} cores, load average at start "
        f"{os.getloadavg()[0]:.1f}, {args.repeats} interleaved rounds, medians of process CPU time; "
        f"kernel load/build {build_s:.1f} s (compiled kernel available: {available}).\n",
        f"kernel: the recording kernel alone{quantities} / `torch.nn.{library}(x)`; 'before' is what the mixer ran "
        f"before the compiled loop (the Python gate-writing loop at batch x width >= 4096, else torch.nn.{library} "
        "+ gate recovery). mixer: our fused mixer with every hook recorded / `cell(x)` + the same `W_out`.\n",
        "| batch | pos | width | kernel before | kernel before/plain | kernel compiled/plain | mixer compiled/plain "
        f"| max abs diff of h (compiled vs torch.nn.{library}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for length, batch, width in sizes(args):
        if batch * length * width > args.max_cells:
            lines.append(f"| {batch} | {length} | {width} | skipped (batch x pos x width > {args.max_cells:.3g}) "
                         "| | | | |")
            print(lines[-1], flush=True)
            continue
        mixer = mixer_for(family, width)
        x = torch.randn(batch, length, width)  # [batch, pos, width]
        h0 = torch.zeros(batch, width)  # [batch, width]
        states = (h0, h0) if family == "lstm" else (h0,)
        weights, cell = mixer.weights, mixer.cell
        with torch.no_grad():
            loop = use_recording_loop(x, mixer.cfg.d_hidden, mixer.parameters())

        def before(x=x, states=states, weights=weights, cell=cell, loop=loop):
            with torch.no_grad():
                if loop:
                    return loop_kernel(x, *states, *weights)
                h, _ = cell(x)
                return recovery(x, h, *states, *weights)

        def compiled(x=x, states=states, weights=weights):
            with torch.no_grad():
                return compiled_kernel(x, *states, *weights)

        def plain(x=x, cell=cell):
            with torch.no_grad():
                return cell(x)

        def plain_mixer(x=x, cell=cell, mixer=mixer):
            with torch.no_grad():
                return mixer.W_out(cell(x)[0])

        record_mixer, _ = recording_call(mixer, x, "fused")
        record_mixer = with_compiled(record_mixer, True)
        record_mixer()
        with torch.no_grad():
            diff = (compiled()["h"] - plain()[0]).abs().max().item()
        t = measure({"plain": plain, "before": before, "compiled": compiled, "plain_mixer": plain_mixer,
                     "record_mixer": record_mixer}, args.repeats, 1)
        name = "Python gate-writing loop" if loop else f"torch.nn.{library} + gate recovery"
        line = (f"| {batch} | {length} | {width} | {name} | {t['before'][0] / t['plain'][0]:.2f}x "
                f"| {t['compiled'][0] / t['plain'][0]:.2f}x | {t['record_mixer'][0] / t['plain_mixer'][0]:.2f}x "
                f"| {diff:.1e} |")
        lines.append(line)
        print(line, f"  [{mixer.last_kernel}; plain {t['plain'][0]:.3f} s]", flush=True)
        del mixer, x, cell, record_mixer
    return lines

if __name__ == "__main__":
    main()

"""GPU benchmark: recording every gate and state on CUDA, against cuDNN and the libraries' own paths.

Prints, in one run and measured side by side (CUDA events, median of repeats, after warm-up):

1. LSTM / GRU with every gate recorded (Triton step kernel, plain launches and CUDA graph; cuDNN
   followed by our parallel gate recovery) as a ratio to the plain cuDNN forward without gates.
2. The diagonal linear scan (Triton) against our chunked PyTorch scan and the readable loop.
3. S6 with every state recorded: our mixer's fused path (Triton selective scan) against transformers'
   own PyTorch Mamba mixer (the path used without the CUDA kernels), and against our reference path.
4. minGRU: our fused mixer against the naive step loop (Feng et al. 2024 report 175x at length 512).
5. Peak memory of one recording per recorded token, against the bytes the cache itself holds.

Run on a CUDA machine: python benchmarks/bench_gpu.py [--quick] [--out results.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from workbench.kernels.linear_scan import linear_scan, linear_scan_reference
from workbench.kernels.rnn_gates import gru_gates_from_hidden, lstm_gates_from_hidden
from workbench.kernels.triton_rnn import triton_gru_forward_recording, triton_lstm_forward_recording
from workbench.kernels.triton_scan import triton_linear_scan

LINES: list[str] = []
# CPU only for a smoke run of the code paths under TRITON_INTERPRET=1 (--quick); timings need CUDA.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def say(text: str = "") -> None:
    print(text, flush=True)
    LINES.append(text)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of fn() over `repeats` timed calls, after two warm-up calls."""
    for _ in range(2):
        fn()
    if DEVICE == "cpu":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _classic_case(family: str, batch: int, width: int, length: int, repeats: int) -> str:
    torch.manual_seed(0)
    module = (torch.nn.LSTM if family == "lstm" else torch.nn.GRU)(width, width, batch_first=True)
    module = module.to(DEVICE).eval()
    x = torch.randn(batch, length, width, device=DEVICE)  # [batch, pos, width]
    h0 = torch.zeros(batch, width, device=DEVICE)  # [batch, width]
    weights = (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)
    lstm = family == "lstm"

    def plain():
        return module(x)

    def tri(graph: bool = False):
        if lstm:
            return triton_lstm_forward_recording(x, h0, h0, *weights, capture_graph=graph)
        return triton_gru_forward_recording(x, h0, *weights, capture_graph=graph)

    def recover():
        h, _ = module(x)
        if lstm:
            return lstm_gates_from_hidden(x, h, h0, h0, *weights)
        return gru_gates_from_hidden(x, h, h0, *weights)

    with torch.no_grad():
        base = timed(plain, repeats)
        t_tri = timed(tri, repeats)
        t_graph = timed(lambda: tri(True), repeats) if DEVICE == "cuda" else float("nan")
        t_rec = timed(recover, repeats)
    return (f"| {family} | {batch} | {width} | {length} | {base * 1e3:.2f} | {t_tri / base:.2f} "
            f"| {t_graph / base:.2f} | {t_rec / base:.2f} |")


def bench_classic(lengths: list[int], batches: list[int], widths: list[int], repeats: int) -> None:
    say("## 1. LSTM / GRU with every gate recorded, ratio to the plain cuDNN forward (lower is better)\n")
    say("| family | batch | width | length | cuDNN plain ms | Triton x | Triton+graph x | cuDNN+recovery x |")
    say("|---|---|---|---|---|---|---|---|")
    for family in ("lstm", "gru"):
        for batch in batches:
            for width in widths:
                for length in lengths:
                    say(_classic_case(family, batch, width, length, repeats))
    say()


def _scan_case(batch: int, length: int, repeats: int) -> str:
    channels = 16 * 1024 if DEVICE == "cuda" else 64
    a = torch.rand(batch, length, channels, device=DEVICE)  # [batch, pos, channels]
    b = torch.randn_like(a)
    t_tri = timed(lambda: triton_linear_scan(a, b), repeats)
    t_chunk = timed(lambda: linear_scan(a, b), repeats)
    t_loop = timed(lambda: linear_scan_reference(a, b), max(1, repeats // 3)) if length <= 1024 else None
    loop = f"{t_loop / t_tri:.1f}" if t_loop else "skipped"
    gbps = 3 * a.numel() * 4 / t_tri / 1e9
    return f"| {batch} | {length} | {t_tri * 1e3:.2f} | {t_chunk / t_tri:.1f} | {loop} | {gbps:.0f} |"


def bench_scan(lengths: list[int], repeats: int) -> None:
    say("## 2. Diagonal linear scan h_t = a_t h_{t-1} + b_t, all states written (S6-sized: 16 x 1024 channels)\n")
    say("| batch | length | Triton ms | chunked torch x | loop x | GB/s (Triton) |")
    say("|---|---|---|---|---|---|")
    for batch in (1, 16):
        for length in lengths:
            say(_scan_case(batch, length, repeats))
    say()


def _s6_models(width: int):
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    from workbench.models import HookedRecurrentLM
    from workbench.models.config import RecurrentConfig

    hf_cfg = MambaConfig(hidden_size=width, state_size=16, expand=2, conv_kernel=4, num_hidden_layers=1,
                         use_mambapy=False)
    hf = MambaMixer(hf_cfg, layer_idx=0).to(DEVICE).eval()
    ours = HookedRecurrentLM(RecurrentConfig(family="s6", n_layers=1, d_model=width, d_hidden=2 * width,
                                             d_state=16, d_conv=4, d_vocab=256)).to(DEVICE).eval()
    return hf, ours


def _s6_case(batch: int, width: int, length: int, hf, ours, repeats: int) -> str:
    if batch * length * 2 * width * 16 * 4 > 8e9:
        return f"| {batch} | {width} | {length} | skipped (states > 8 GB) | | | | |"
    tokens = torch.randint(0, 256, (batch, length), device=DEVICE)
    hidden = torch.randn(batch, length, width, device=DEVICE)  # [batch, pos, width]

    def mixer_hooks(name: str) -> bool:
        return "mixer" in name

    with torch.no_grad():
        t_ours = timed(lambda: ours.run_with_cache(tokens, names_filter=mixer_hooks), repeats)
        kernel = ours.blocks[0].mixer.last_kernel
        t_hf = timed(lambda: hf(hidden), max(1, repeats // 2))
        ref = "skipped"
        if length <= 1024:
            t_ref = timed(lambda: ours.run_with_cache(tokens, path="reference", names_filter=mixer_hooks), 1)
            ref = f"{t_ref / t_ours:.1f}"
    return (f"| {batch} | {width} | {length} | {t_ours * 1e3:.2f} | {t_hf * 1e3:.2f} | {t_hf / t_ours:.1f} | {ref} "
            f"| {kernel} |")


def bench_s6(lengths: list[int], widths: list[int], repeats: int) -> None:
    say("## 3. S6 / Mamba mixer with every state recorded vs transformers' PyTorch MambaMixer (no CUDA kernels)\n")
    say("| batch | width | length | ours fused ms (all states) | HF MambaMixer ms | HF / ours | ours ref / fused "
        "| our kernel |")
    say("|---|---|---|---|---|---|---|---|")
    for batch in (1, 16):
        for width in widths:
            hf, ours = _s6_models(width)
            for length in lengths:
                say(_s6_case(batch, width, length, hf, ours, repeats))
    say()


def _mingru_case(mixer, length: int, repeats: int) -> str:
    x = torch.randn(16, length, 512, device=DEVICE)  # [batch, pos, width]
    state = mixer.zero_state(16, x.device, x.dtype)
    with torch.no_grad():
        t_fused = timed(lambda: mixer.forward_fused(x, state), repeats)
        t_loop = timed(lambda: mixer.forward_reference(x, state), max(1, repeats // 3))
    return f"| {length} | {t_fused * 1e3:.2f} | {t_loop * 1e3:.1f} | {t_loop / t_fused:.0f} |"


def bench_mingru(lengths: list[int], repeats: int) -> None:
    from workbench.models import HookedRecurrentLM
    from workbench.models.config import RecurrentConfig

    say("## 4. minGRU mixer: fused (Triton scan) vs the naive step loop, batch 16, width 512\n")
    say("| length | fused ms | loop ms | loop / fused |")
    say("|---|---|---|---|")
    model = HookedRecurrentLM(RecurrentConfig(family="mingru", n_layers=1, d_model=512, d_hidden=512,
                                              d_vocab=256)).to(DEVICE).eval()
    mixer = model.blocks[0].mixer
    for length in lengths:
        say(_mingru_case(mixer, length, repeats))
        kernel = mixer.last_kernel
    say(f"\n(fused kernel that ran: {kernel})\n")


def bench_memory(width: int, length: int) -> None:
    say(f"## 5. Peak memory of one recording (S6, width {width}, batch 16, length {length}, every hook)\n")
    _, ours = _s6_models(width)
    tokens = torch.randint(0, 256, (16, length), device=DEVICE)
    if DEVICE == "cpu":
        say("(peak memory is measured on CUDA only)")
        return
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.no_grad():
        _, cache = ours.run_with_cache(tokens)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    held = sum(t.numel() * t.element_size() for t in cache.values())
    tokens_n = tokens.numel()
    say(f"cache holds {held / 1e6:.1f} MB ({held / tokens_n / 1e3:.1f} kB per token); peak above the model "
        f"{peak / 1e6:.1f} MB ({peak / tokens_n / 1e3:.1f} kB per token); peak / cache = {peak / held:.2f}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    parser.add_argument("--sections", default="12345", help="which sections to run")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.quick:
        print("bench_gpu.py needs a CUDA GPU (or --quick under TRITON_INTERPRET=1 for a smoke run)", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU (Triton interpreter, smoke run)"
    say(f"# GPU benchmark on {name} (torch {torch.__version__}, float32, TF32 off)\n")
    lengths = [64, 256] if args.quick else [256, 1024, 4096]
    widths = [64] if args.quick else [256, 1024]
    repeats = 3 if args.quick else 7
    if "1" in args.sections:
        bench_classic(lengths, [1, 16], widths, repeats)
    if "2" in args.sections:
        bench_scan(lengths, repeats)
    if "3" in args.sections:
        bench_s6([256] if args.quick else [256, 1024, 4096], widths, repeats)
    if "4" in args.sections:
        bench_mingru([64, 512] if args.quick else [512, 4096], repeats)
    if "5" in args.sections:
        bench_memory(64 if args.quick else 1024, 256 if args.quick else 1024)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write("\n".join(LINES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

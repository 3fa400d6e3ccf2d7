"""Qwen3-Next adapter: the cost of our forward and of recording over the library's own forward, on CPU.

A random Qwen3-Next (d_model 256, three gated delta-rule layers and one attention layer, 8 value heads
of 32 over 4 key heads, one mixture-of-experts layer) in float32; best of 5 after a warm-up, per
call: the library's forward, ours on each path without hooks, and ours recording every matrix state
or every hook. Ratio = time / the library's. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_qwen3_next_recording.py --length 512
"""

from __future__ import annotations

import argparse
import os

import torch
import transformers
from bench_paths import best_time  # a sibling script: benchmarks/ is on sys.path when run

import workbench


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.Qwen3NextConfig(
        vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, linear_conv_kernel_dim=4, linear_key_head_dim=32,
        linear_value_head_dim=32, linear_num_key_heads=4, linear_num_value_heads=8, decoder_sparse_step=2,
        moe_intermediate_size=128, shared_expert_intermediate_size=128, num_experts_per_tok=2, num_experts=8,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"])
    model = transformers.Qwen3NextForCausalLM(config).eval()
    model.config._experts_implementation = "eager"
    return model


def best(fn, repeats: int = 5) -> float:
    """Best wall time of `fn` without autograd (bench_paths.best_time: one warm-up call first)."""
    with torch.no_grad():
        return best_time(fn, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    hf = build()
    model = workbench.from_transformers(hf)
    ids = torch.randint(0, 1000, (1, args.length), generator=torch.Generator().manual_seed(0))
    states = [n for n in model.hook_dict if n.endswith("mixer.hook_state")]
    rows = {
        "library forward": lambda: hf(ids),
        "ours, fused, no hooks": lambda: model(ids, path="fused"),
        "ours, reference, no hooks": lambda: model(ids, path="reference"),
        "ours, fused, recording every S_t": lambda: model.run_with_cache(ids, names_filter=states, path="fused"),
        "ours, fused, recording every hook": lambda: model.run_with_cache(ids, path="fused"),
    }
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} "
          f"thread(s), float32, batch 1, length {args.length}; load average {os.getloadavg()}")
    print("| call | time (s) | × library |")
    print("|---|---|---|")
    base = None
    for name, fn in rows.items():
        seconds = best(fn)
        base = base or seconds
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |", flush=True)
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()

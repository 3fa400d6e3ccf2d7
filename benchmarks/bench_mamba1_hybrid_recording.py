"""Jamba, Zamba and LFM2 adapters: the cost of our forward and of recording states over the library's forward.

Per family a random model with d_model 256 and four layers (Jamba: three Mamba layers and one attention
layer, one mixture-of-experts layer of 8 experts, top 2; Zamba: two Mamba layers and two hybrid layers
sharing the attention block; LFM2: three short-conv layers and one attention layer) in float32, batch 1;
best of 5 after a warm-up, per call: the library's forward, ours without hooks, ours recording every
recurrent state (`mixer.hook_state`), and ours recording every hook. Ratio = time / the library's, all
rows of a family measured in one run, side by side. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_mamba1_hybrid_recording.py --length 512
"""

from __future__ import annotations

import argparse
import os

import torch
import transformers
from bench_paths import best_time  # a sibling script: benchmarks/ is on sys.path when run

import workbench

VOCAB = 1000


def build(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "jamba":
        config = transformers.JambaConfig(
            vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, attn_layer_period=4, attn_layer_offset=3, expert_layer_period=2,
            expert_layer_offset=1, num_experts=8, num_experts_per_tok=2, mamba_d_state=16, mamba_d_conv=4,
            mamba_expand=2)
        model = transformers.JambaForCausalLM(config)
        model.config._experts_implementation = "eager"
    elif family == "zamba":
        config = transformers.ZambaConfig(
            vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=4, n_mamba_heads=2, attn_layer_period=1, attn_layer_offset=0, mamba_d_state=16,
            mamba_d_conv=4, mamba_expand=2)
        model = transformers.ZambaForCausalLM(config)
    else:
        config = transformers.Lfm2Config(
            vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, conv_L_cache=3, layer_types=["conv", "conv", "conv", "full_attention"])
        model = transformers.Lfm2ForCausalLM(config)
    return model.eval()


def best(fn, repeats: int = 5) -> float:
    """Best wall time of `fn` without autograd (bench_paths.best_time: one warm-up call first)."""
    with torch.no_grad():
        return best_time(fn, repeats)


def measure(family: str, ids: torch.Tensor) -> None:
    """One family's rows, printed as they are measured."""
    hf = build(family)
    model = workbench.from_transformers(hf)
    states = [n for n in model.hook_dict if n.endswith("mixer.hook_state")]
    rows = {
        "library forward": lambda: hf(ids),
        "ours, fused, no hooks": lambda: model(ids, path="fused"),
        "ours, fused, recording every state": lambda: model.run_with_cache(ids, names_filter=states),
        "ours, fused, recording every hook": lambda: model.run_with_cache(ids),
    }
    base = None
    for name, fn in rows.items():
        seconds = best(fn)
        base = base or seconds
        print(f"| {family} | {name} | {seconds:.3f} | {seconds / base:.2f} |", flush=True)
    kernels = sorted(set(model.kernels_used().values()))
    print(f"| {family} | kernels: {', '.join(kernels)} | | |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--families", nargs="+", default=["jamba", "zamba", "lfm2"])
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ids = torch.randint(0, VOCAB, (1, args.length), generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} "
          f"thread(s), float32, batch 1, length {args.length}; load average {os.getloadavg()}")
    print("| family | call | time (s) | × library |")
    print("|---|---|---|---|")
    for family in args.families:
        measure(family, ids)
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()

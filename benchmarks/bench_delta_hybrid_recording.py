"""Kimi-Linear and OLMo-Hybrid adapters: the cost of our forward and of recording over the library's own
forward, on CPU, side by side in one run.

Random models of d_model 256 (three delta-rule layers and one attention layer; 8 delta-rule heads of 32;
Kimi with one mixture-of-experts layer of 8 experts in 2 groups and latent attention of rank 64) in float32;
best of 5 after a warm-up, per call: the library's forward, ours on each path without hooks, and ours
recording every matrix state or every hook. Ratio = time / the library's forward of the same family. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_delta_hybrid_recording.py --length 512
"""

from __future__ import annotations

import argparse
import os

import torch
import transformers
from bench_paths import best_time  # a sibling script: benchmarks/ is on sys.path when run

import workbench

LAYERS = ["linear_attention", "linear_attention", "linear_attention", "full_attention"]


def build(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "kimi_linear":
        config = transformers.KimiLinearConfig(
            vocab_size=1000, hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=64, qk_rope_head_dim=16,
            qk_nope_head_dim=48, v_head_dim=64, linear_head_dim=32, linear_num_heads=8, num_local_experts=8,
            num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1, pad_token_id=0, bos_token_id=1,
            eos_token_id=2, layer_types=LAYERS, mlp_layer_types=["dense", "sparse", "dense", "dense"])
        model = transformers.KimiLinearForCausalLM(config).eval()
        model.config._experts_implementation = "eager"
        return model
    config = transformers.OlmoHybridConfig(
        vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, linear_key_head_dim=32, linear_value_head_dim=32,
        linear_num_key_heads=4, linear_num_value_heads=8, pad_token_id=0, eos_token_id=2, layer_types=LAYERS)
    return transformers.OlmoHybridForCausalLM(config).eval()


def best(fn, repeats: int = 5) -> float:
    """Best wall time of `fn` without autograd (bench_paths.best_time: one warm-up call first)."""
    with torch.no_grad():
        return best_time(fn, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--families", nargs="+", default=["kimi_linear", "olmo_hybrid"],
                        choices=["kimi_linear", "olmo_hybrid"])
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ids = torch.randint(0, 1000, (1, args.length), generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} "
          f"thread(s), float32, batch 1, length {args.length}; load average {os.getloadavg()}")
    print("| family | call | time (s) | × library |")
    print("|---|---|---|---|")
    for family in args.families:
        hf = build(family)
        model = workbench.from_transformers(hf)
        states = [n for n in model.hook_dict if n.endswith("mixer.hook_state")]
        rows = {
            "library forward": lambda: hf(ids),  # noqa: B023 (timed before the loop moves on)
            "ours, fused, no hooks": lambda: model(ids, path="fused"),  # noqa: B023
            "ours, reference, no hooks": lambda: model(ids, path="reference"),  # noqa: B023
            "ours, fused, recording every S_t":
                lambda: model.run_with_cache(ids, names_filter=states, path="fused"),  # noqa: B023
            "ours, fused, recording every hook": lambda: model.run_with_cache(ids, path="fused"),  # noqa: B023
        }
        base = None
        for name, fn in rows.items():
            seconds = best(fn)
            base = base or seconds
            print(f"| {family} | {name} | {seconds:.3f} | {seconds / base:.2f} |", flush=True)
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()

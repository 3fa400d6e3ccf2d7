"""Mamba-2 hybrids (Bamba, GraniteMoeHybrid, NemotronH, Falcon-H1, Zamba2): the cost of recording every state
over the library's own forward, on CPU, side by side in one run.

Per family a random model of d_model 256 with three Mamba-2 layers (8 heads of 64, d_state 32, one group)
and one attention layer (4 query / 2 key-value heads of 64) in float32 (NemotronH: each followed by an
MLP block; Granite: by a mixture of 8 experts, top 2, plus its shared MLP; Falcon-H1: four blocks each
running Mamba-2 and attention in parallel; Zamba2: four Mamba-2 layers, layers 1 and 3 running the one
shared block first, 4 heads of 128, LoRA rank 8 per depth); best of 5 after a warm-up:
the library's forward, ours (fused path) without hooks, ours recording every recurrent state (each
Mamba-2 layer's s_t and each attention layer's keys and values) and ours recording every hook.
Ratio = time / the library's. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_hybrid_recording.py --length 512
"""

from __future__ import annotations

import argparse
import os

import torch
import transformers
from bench_paths import best_time  # a sibling script: benchmarks/ is on sys.path when run

import workbench

MAMBA = {"mamba_d_head": 64, "mamba_n_groups": 1, "mamba_d_state": 32, "mamba_d_conv": 4, "mamba_expand": 2,
         "mamba_chunk_size": 128, "mamba_n_heads": 8}
COMMON = {"vocab_size": 1000, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2}
KINDS = ["linear_attention", "linear_attention", "linear_attention", "full_attention"]


def build(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "bamba":
        config = transformers.BambaConfig(**COMMON, **MAMBA, intermediate_size=512, num_hidden_layers=4,
                                          attn_layer_indices=[3])
        return transformers.BambaForCausalLM(config).eval()
    if family == "granitemoehybrid":
        config = transformers.GraniteMoeHybridConfig(
            **COMMON, **MAMBA, intermediate_size=128, shared_intermediate_size=256, num_hidden_layers=4,
            layer_types=KINDS, num_local_experts=8, num_experts_per_tok=2, position_embedding_type="rope")
        model = transformers.GraniteMoeHybridForCausalLM(config).eval()
        model.config._experts_implementation = "eager"
        return model
    if family == "zamba2":  # four Mamba-2 layers; layers 1 and 3 run the shared transformer block first
        config = transformers.Zamba2Config(
            vocab_size=1000, hidden_size=256, num_attention_heads=4, num_key_value_heads=4, n_mamba_heads=8,
            mamba_ngroups=1, mamba_d_state=32, mamba_d_conv=4, mamba_expand=2, chunk_size=128,
            intermediate_size=512, num_hidden_layers=4, num_mem_blocks=1, use_shared_attention_adapter=True,
            adapter_rank=8, layers_block_type=["linear_attention", "hybrid", "linear_attention", "hybrid"])
        return transformers.Zamba2ForCausalLM(config).eval()
    if family == "falcon_h1":  # four blocks, each Mamba-2 and attention in parallel
        config = transformers.FalconH1Config(**COMMON, **MAMBA, mamba_d_ssm=512, head_dim=64, intermediate_size=512,
                                             num_hidden_layers=4)
        return transformers.FalconH1ForCausalLM(config).eval()
    config = transformers.NemotronHConfig(
        **COMMON, head_dim=64, intermediate_size=512, mamba_num_heads=8, mamba_head_dim=64, n_groups=1,
        ssm_state_size=32, conv_kernel=4, chunk_size=128, num_hidden_layers=8,
        layers_block_type=[kind for pair in zip(KINDS, ["mlp"] * 4, strict=True) for kind in pair])
    return transformers.NemotronHForCausalLM(config).eval()


def best(fn, repeats: int = 5) -> float:
    """Best wall time of `fn` without autograd (bench_paths.best_time: one warm-up call first)."""
    with torch.no_grad():
        return best_time(fn, repeats)


def measure(family: str, ids: torch.Tensor) -> None:
    """Print one table row per call for `family`."""
    hf = build(family)
    model = workbench.from_transformers(hf)
    states = [n for n in model.hook_dict if n.endswith(("mixer.hook_state", ".hook_k", ".hook_v"))]
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
    kernels = sorted({block.mixer.last_kernel for block in model.blocks})
    print(f"| {family} | kernels: {'; '.join(kernels)} | | |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--families", nargs="+", default=["bamba", "granitemoehybrid", "nemotron_h", "falcon_h1",
                                                               "zamba2"])
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ids = torch.randint(0, 1000, (1, args.length), generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} "
          f"thread(s), float32, batch 1, length {args.length}; load average {os.getloadavg()}")
    print("| family | call | time (s) | × library |")
    print("|---|---|---|---|")
    for family in args.families:
        measure(family, ids)
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Every hybrid (delta rule: Qwen3-Next, Kimi-Linear, OLMo-Hybrid; Mamba-2: Bamba, GraniteMoeHybrid, NemotronH,
Falcon-H1, Zamba2; Mamba-1: Jamba, Zamba; LFM2): the cost of recording every state over the library's own
forward, on CPU, side by side in one run.

Per family a random model of d_model 256 in float32, batch 1. Mamba-2 hybrids: three Mamba-2 layers (8 heads
of 64, d_state 32, one group) and one attention layer (4 query / 2 key-value heads of 64) (NemotronH: each
followed by an MLP block; Granite: by a mixture of 8 experts, top 2, plus its shared MLP; Falcon-H1: four
blocks each running Mamba-2 and attention in parallel; Zamba2: four Mamba-2 layers, layers 1 and 3 running
the one shared block first, 4 heads of 128, LoRA rank 8 per depth). Jamba: three Mamba layers and one attention layer,
one mixture-of-experts layer of 8 experts, top 2; Zamba: two Mamba layers and two hybrid layers sharing the
attention block; LFM2: three short-conv layers and one attention layer. Delta-rule hybrids: three delta-rule
layers and one attention layer, 8 delta-rule heads of 32 (Qwen3-Next and OLMo-Hybrid over 4 key heads;
Qwen3-Next with one mixture-of-experts layer of 8 experts, top 2; Kimi with one of 8 experts in 2 groups
and latent attention of rank 64).

Calls: the library's forward, ours (fused path) without hooks, ours recording every state (each recurrent
layer's `mixer.hook_state` and each attention layer's keys and values, or latents for Kimi) and ours
recording every hook.
Repeats are interleaved (every call of every family once per round, after one warm-up round), so a load
swing on the shared machine reaches all rows alike; the table gives the best and the median round.
Ratio = time / the library's, per family. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_hybrid_recording.py --length 512 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import transformers

import workbench
from workbench.models.protocol import HookedModel

VOCAB = 1000
MAMBA = {"mamba_d_head": 64, "mamba_n_groups": 1, "mamba_d_state": 32, "mamba_d_conv": 4, "mamba_expand": 2,
         "mamba_chunk_size": 128, "mamba_n_heads": 8}
COMMON = {"vocab_size": VOCAB, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2}
KINDS = ["linear_attention", "linear_attention", "linear_attention", "full_attention"]
FAMILIES = ["qwen3_next", "kimi_linear", "olmo_hybrid",
            "bamba", "granitemoehybrid", "nemotron_h", "falcon_h1", "zamba2", "jamba", "zamba", "lfm2"]
CACHE_HOOKS = (".hook_k", ".hook_v", ".hook_latent", ".hook_k_shared")  # an attention layer's KV cache
CALLS = ["library forward", "ours, fused, no hooks", "ours, fused, recording every state",
         "ours, fused, recording every hook"]


def build(family: str) -> torch.nn.Module:
    """The library's model of `family` at the sizes above, random weights (seed 0), in eval mode."""
    torch.manual_seed(0)
    if family in ("qwen3_next", "kimi_linear", "olmo_hybrid"):
        return build_delta_rule(family)
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
            vocab_size=VOCAB, hidden_size=256, num_attention_heads=4, num_key_value_heads=4, n_mamba_heads=8,
            mamba_ngroups=1, mamba_d_state=32, mamba_d_conv=4, mamba_expand=2, chunk_size=128,
            intermediate_size=512, num_hidden_layers=4, num_mem_blocks=1, use_shared_attention_adapter=True,
            adapter_rank=8, layers_block_type=["linear_attention", "hybrid", "linear_attention", "hybrid"])
        return transformers.Zamba2ForCausalLM(config).eval()
    if family == "falcon_h1":  # four blocks, each Mamba-2 and attention in parallel
        config = transformers.FalconH1Config(**COMMON, **MAMBA, mamba_d_ssm=512, head_dim=64, intermediate_size=512,
                                             num_hidden_layers=4)
        return transformers.FalconH1ForCausalLM(config).eval()
    if family == "nemotron_h":
        config = transformers.NemotronHConfig(
            **COMMON, head_dim=64, intermediate_size=512, mamba_num_heads=8, mamba_head_dim=64, n_groups=1,
            ssm_state_size=32, conv_kernel=4, chunk_size=128, num_hidden_layers=8,
            layers_block_type=[kind for pair in zip(KINDS, ["mlp"] * 4, strict=True) for kind in pair])
        return transformers.NemotronHForCausalLM(config).eval()
    if family == "jamba":
        config = transformers.JambaConfig(
            **COMMON, intermediate_size=512, num_hidden_layers=4, attn_layer_period=4, attn_layer_offset=3,
            expert_layer_period=2, expert_layer_offset=1, num_experts=8, num_experts_per_tok=2, mamba_d_state=16,
            mamba_d_conv=4, mamba_expand=2)
        model = transformers.JambaForCausalLM(config)
        model.config._experts_implementation = "eager"
        return model.eval()
    if family == "zamba":
        config = transformers.ZambaConfig(
            vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=4, n_mamba_heads=2, attn_layer_period=1, attn_layer_offset=0, mamba_d_state=16,
            mamba_d_conv=4, mamba_expand=2)
        return transformers.ZambaForCausalLM(config).eval()
    if family == "lfm2":
        config = transformers.Lfm2Config(**COMMON, intermediate_size=768, num_hidden_layers=4, conv_L_cache=3,
                                         layer_types=["conv", "conv", "conv", "full_attention"])
        return transformers.Lfm2ForCausalLM(config).eval()
    raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")


def build_delta_rule(family: str) -> torch.nn.Module:
    """A delta-rule hybrid: three delta-rule layers (8 heads of 32) and one attention layer."""
    delta = {"linear_key_head_dim": 32, "linear_value_head_dim": 32, "linear_num_key_heads": 4,
             "linear_num_value_heads": 8}
    if family == "qwen3_next":
        config = transformers.Qwen3NextConfig(
            **COMMON, intermediate_size=512, num_hidden_layers=4, head_dim=64, linear_conv_kernel_dim=4, **delta,
            decoder_sparse_step=2, moe_intermediate_size=128, shared_expert_intermediate_size=128,
            num_experts_per_tok=2, num_experts=8, layer_types=KINDS)
        model = transformers.Qwen3NextForCausalLM(config).eval()
    elif family == "kimi_linear":
        config = transformers.KimiLinearConfig(
            vocab_size=VOCAB, hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=64, qk_rope_head_dim=16,
            qk_nope_head_dim=48, v_head_dim=64, linear_head_dim=32, linear_num_heads=8, num_local_experts=8,
            num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1, pad_token_id=0, bos_token_id=1,
            eos_token_id=2, layer_types=KINDS, mlp_layer_types=["dense", "sparse", "dense", "dense"])
        model = transformers.KimiLinearForCausalLM(config).eval()
    else:
        config = transformers.OlmoHybridConfig(**COMMON, intermediate_size=512, num_hidden_layers=4, head_dim=64,
                                               **delta, pad_token_id=0, eos_token_id=2, layer_types=KINDS)
        return transformers.OlmoHybridForCausalLM(config).eval()
    model.config._experts_implementation = "eager"
    return model


def calls(family: str, ids: torch.Tensor) -> tuple[dict[str, Callable[[], object]], HookedModel]:
    """The four calls of `family` (in CALLS order) and our model."""
    hf = build(family)
    model = workbench.from_transformers(hf)
    # a delta-rule layer's own k_t, v_t are inputs, not state: only attention modules' keys count
    inputs = {f"blocks.{layer}.mixer.hook_{q}" for layer in model.recurrent_layers for q in ("k", "v")}
    states = [n for n in model.hook_dict
              if n.endswith("mixer.hook_state") or (n.endswith(CACHE_HOOKS) and n not in inputs)]
    fns = [lambda: hf(ids), lambda: model(ids, path="fused"),
           lambda: model.run_with_cache(ids, names_filter=states), lambda: model.run_with_cache(ids)]
    return dict(zip(CALLS, fns, strict=True)), model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ids = torch.randint(0, VOCAB, (1, args.length), generator=torch.Generator().manual_seed(0))
    built = {family: calls(family, ids) for family in args.families}
    times: dict[tuple[str, str], list[float]] = {(f, c): [] for f in args.families for c in CALLS}
    load_start = os.getloadavg()
    with torch.no_grad():
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for family, (fns, _) in built.items():
                for name, fn in fns.items():
                    start = time.perf_counter()
                    fn()
                    if round_:
                        times[family, name].append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} "
          f"thread(s), float32, batch 1, length {args.length}, {args.rounds} interleaved rounds; "
          f"load average at start {tuple(round(x, 2) for x in load_start)}, "
          f"at end {tuple(round(x, 2) for x in os.getloadavg())}")
    print("| family | call | best (s) | median (s) | × library, best | × library, median |")
    print("|---|---|---|---|---|---|")
    for family, (_, model) in built.items():
        base = times[family, CALLS[0]]
        for name in CALLS:
            t = times[family, name]
            print(f"| {family} | {name} | {min(t):.3f} | {statistics.median(t):.3f} | "
                  f"{min(t) / min(base):.2f} | {statistics.median(t) / statistics.median(base):.2f} |")
        kernels = sorted(set(model.kernels_used().values()))
        print(f"| {family} | kernels: {'; '.join(kernels)} | | | | |", flush=True)


if __name__ == "__main__":
    main()

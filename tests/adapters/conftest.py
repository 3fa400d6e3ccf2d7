"""Tiny randomly initialised `transformers` recurrent LMs, one per supported family (no downloads)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import transformers


@dataclass(frozen=True)
class Family:
    """How to build a tiny model of one family and which of its hooks carries the recurrent state."""

    name: str
    hf_class: str
    build: Callable[[], torch.nn.Module]
    state_hook: str  # mixer quantity holding the recurrent state, [batch, pos, ...]
    # (model, tokens) -> the library's own final state per layer, keyed as our state dicts
    library_states: Callable[[torch.nn.Module, torch.Tensor], list[dict[str, torch.Tensor]]]
    supports_padding: bool = True
    state_lag: int = 0  # 1 where the state after t is first read at t + 1 (RWKV: wkv_t uses state_{t-1})
    state_layers: tuple[int, ...] | None = None  # layers with `state_hook` (None: all; Griffin mixes in attention)
    # (model, tokens) -> the library's logits computed in float64 as far as the library allows
    float64_logits: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None
    float64_tolerance: float = 1e-6  # float32 casts inside the library bound the float64 match

    def layers_with_state(self, n_layers: int) -> tuple[int, ...]:
        return tuple(range(n_layers)) if self.state_layers is None else self.state_layers


def _require(*names: str) -> list:
    missing = [n for n in names if not hasattr(transformers, n)]
    if missing:
        pytest.skip(f"transformers {transformers.__version__} has no {', '.join(missing)}")
    return [getattr(transformers, n) for n in names]


def _mamba() -> torch.nn.Module:
    config, model = _require("MambaConfig", "MambaForCausalLM")
    return model(config(vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2))


def _falcon_mamba() -> torch.nn.Module:
    config, model = _require("FalconMambaConfig", "FalconMambaForCausalLM")
    return model(config(vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2))


def _mamba2() -> torch.nn.Module:
    config, model = _require("Mamba2Config", "Mamba2ForCausalLM")
    return model(config(vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                        num_heads=4, head_dim=8, n_groups=2, chunk_size=8, conv_kernel=4))


def _rwkv() -> torch.nn.Module:
    config, model = _require("RwkvConfig", "RwkvForCausalLM")
    # rescale_every=1: the library's inference-time halving of the residual acts after every block
    return model(config(vocab_size=50, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16,
                        intermediate_size=32, context_length=64, rescale_every=1))


def _rwkv_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The library's five [batch, d, layer] state tensors, split per layer."""
    ffn_shift, shift, num, den, mx = hf(ids, use_cache=True).state
    return [
        {"ffn_shift": ffn_shift[..., l], "shift": shift[..., l], "num": num[..., l], "den": den[..., l],
         "max": mx[..., l]}
        for l in range(hf.config.num_hidden_layers)
    ]


def _mamba_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Conv window (the library keeps d_conv inputs, we keep d_conv - 1) and SSM state per layer."""
    cache = hf(ids, use_cache=True).cache
    return [
        {"conv": cache.get_conv_state(layer)[..., 1:], "state": cache.get_recurrent_state(layer)}
        for layer in range(hf.config.num_hidden_layers)
    ]


def _recurrent_gemma() -> torch.nn.Module:
    config, model = _require("RecurrentGemmaConfig", "RecurrentGemmaForCausalLM")
    # layers 0, 1: RG-LRU; layer 2: local attention (window 4, two key/value heads for four query heads)
    hf = model(config(vocab_size=50, hidden_size=16, intermediate_size=48, num_attention_heads=4,
                      num_key_value_heads=2, num_hidden_layers=3, lru_width=16, attention_window_size=4,
                      conv1d_width=4, block_types=["recurrent", "recurrent", "attention"], logits_soft_cap=5.0))
    with torch.no_grad():  # gates spread over (0, 1) rather than all near 1/2, as in a trained model
        for layer in hf.model.layers[:2]:
            lru = layer.temporal_block.rg_lru
            lru.input_gate_weight.normal_(0.0, 1.0)
            lru.recurrent_gate_weight.normal_(0.0, 1.0)
    return hf


def _recurrent_gemma_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The library's per-module recurrent states (conv window, h in float32) and its sliding-window KV cache."""
    cache = transformers.DynamicCache(config=hf.config)
    hf(ids, use_cache=True, cache=cache)
    position = torch.full((ids.shape[0],), float(ids.shape[1]), dtype=torch.float64)
    states = []
    for layer, decoder in enumerate(hf.model.layers):
        block = decoder.temporal_block
        if hasattr(block, "rg_lru"):
            states.append({"conv": block.conv1d_state, "h": block.rg_lru.recurrent_states, "position": position})
        else:
            states.append({"k": cache.layers[layer].keys, "v": cache.layers[layer].values, "position": position})
    return states


def _xlstm() -> torch.nn.Module:
    config, model = _require("xLSTMConfig", "xLSTMForCausalLM")
    # hidden 128 so that the library's rounded head sizes (multiples of 64) match its layers; chunk_size 8
    # so the library's own forward runs its chunkwise kernel and then its step kernel on 11 tokens
    hf = model(config(vocab_size=50, hidden_size=128, num_hidden_layers=2, num_heads=4, qk_dim_factor=0.5,
                      v_dim_factor=1.0, ffn_proj_factor=1.0, chunk_size=8))
    with torch.no_grad():  # the library starts gates at zero weights and i-bias −10; spread them instead,
        # forget gates mostly near σ(3) ≈ 0.95 as in a trained model (wider gate weights make the float32
        # readout so ill-conditioned that the library's own chunkwise and step kernels differ by > 1e-5)
        for block in hf.backbone.blocks:
            layer = block.mlstm_layer
            for gate in (layer.igate_preact, layer.fgate_preact, layer.ogate_preact):
                gate.weight.normal_(0.0, 0.1)
            layer.igate_preact.bias.normal_(-2.0, 1.0)
            layer.fgate_preact.bias.normal_(3.0, 1.0)
    return hf


def _xlstm_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The library's xLSTMCache: (C, n, m) per layer, m shaped [batch, heads, 1]."""
    cache = hf(ids, use_cache=True).cache
    return [{"C": C, "n": n, "m": m[..., 0]} for C, n, m in cache.rnn_state.values()]


def _qwen3_next() -> torch.nn.Module:
    config, model = _require("Qwen3NextConfig", "Qwen3NextForCausalLM")
    # layers 0, 1: gated delta rule (odd key and value head sizes 5 and 7, two value heads per key head);
    # layer 2: gated full attention (two key/value groups); layer 1's MLP is a mixture of four experts
    hf = model(config(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=6, linear_conv_kernel_dim=4,
                      linear_key_head_dim=5, linear_value_head_dim=7, linear_num_key_heads=2,
                      linear_num_value_heads=4, decoder_sparse_step=2, moe_intermediate_size=8,
                      shared_expert_intermediate_size=8, num_experts_per_tok=2, num_experts=4,
                      layer_types=["linear_attention", "linear_attention", "full_attention"]))
    hf.config._experts_implementation = "eager"  # the grouped-matmul experts refuse float64
    with torch.no_grad():  # norm weights away from their zero init, so the (1 + w) offset is exercised
        for name, parameter in hf.named_parameters():
            if "norm" in name:
                parameter.normal_(0.0, 0.3)
    return hf


def _delta_rule_cache_states(hf: torch.nn.Module, ids: torch.Tensor,
                             attention: tuple[str, str] = ("k", "v")) -> list[dict[str, torch.Tensor]]:
    """The library's DynamicCache: conv window and matrix state for delta-rule layers, and the attention
    layers' cached keys and values under our state names `attention` (Kimi's MLA caches latents)."""
    cache = hf(ids, use_cache=True).cache
    states = []
    for layer, kind in enumerate(hf.config.layer_types):
        if kind == "linear_attention":
            states.append({"conv": cache.get_conv_state(layer)[..., 1:], "state": cache.get_recurrent_state(layer)})
        else:
            states.append(dict(zip(attention, (cache.layers[layer].keys, cache.layers[layer].values), strict=True)))
    return states


def _kimi_linear() -> torch.nn.Module:
    config, model = _require("KimiLinearConfig", "KimiLinearForCausalLM")
    # layers 0, 1: KDA (3 heads of odd size 5); layer 2: latent attention (low-rank queries of rank 4, latent
    # rank 6, shared key part 2, nope part 3, values 5); layers 1, 2: four experts in two groups, top 2 of the
    # best group, one shared expert
    hf = model(config(vocab_size=50, hidden_size=16, intermediate_size=24, moe_intermediate_size=8,
                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=4,
                      kv_lora_rank=6, qk_rope_head_dim=2, qk_nope_head_dim=3, v_head_dim=5, linear_head_dim=5,
                      linear_num_heads=3, linear_conv_kernel_dim=4, num_local_experts=4, num_experts_per_tok=2,
                      n_group=2, topk_group=1, n_shared_experts=1, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2, layer_types=["linear_attention", "linear_attention", "full_attention"]))
    hf.config._experts_implementation = "eager"  # the grouped-matmul experts refuse float64
    with torch.no_grad():  # norm weights and the router's correction bias away from their ones / zeros init
        for name, parameter in hf.named_parameters():
            if "norm" in name:
                parameter.normal_(1.0, 0.3)
        for layer in hf.model.layers[1:]:
            layer.mlp.gate.e_score_correction_bias.normal_(0.0, 0.1)
    return hf


def _kimi_linear_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """As the delta-rule hybrids', with the latent attention's cache as `latent` and `k_shared`."""
    return _delta_rule_cache_states(hf, ids, attention=("latent", "k_shared"))


def _olmo_hybrid(rope: bool = True) -> torch.nn.Module:
    config, model = _require("OlmoHybridConfig", "OlmoHybridForCausalLM")
    # layers 0, 1: gated delta rule (2 key heads of size 5, 4 value heads of size 7, β ∈ (0, 2)); layer 2:
    # post-norm attention with RoPE (4 query heads, 2 key/value groups, head size 6)
    cfg = config(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=6, linear_conv_kernel_dim=4,
                 linear_key_head_dim=5, linear_value_head_dim=7, linear_num_key_heads=2,
                 linear_num_value_heads=4, linear_a_log_max=1.0, pad_token_id=0, eos_token_id=2,
                 rope_parameters={"rope_type": "default", "rope_theta": 100.0},
                 layer_types=["linear_attention", "linear_attention", "full_attention"])
    if not rope:  # as the released checkpoints (the config fills in a default when given None)
        cfg.rope_parameters = None
    hf = model(cfg)
    with torch.no_grad():  # norm weights away from their ones init
        for name, parameter in hf.named_parameters():
            if "norm" in name:
                parameter.normal_(1.0, 0.3)
    return hf


def _bamba() -> torch.nn.Module:
    config, model = _require("BambaConfig", "BambaForCausalLM")
    # layers 0, 1: Mamba-2 (8 heads of odd size 3 in 2 groups, chunk 5 that divides no test length);
    # layer 2: attention (4 query / 2 key-value heads of odd size 3, RoPE on 2 of the 3 dims)
    hf = model(config(vocab_size=50, hidden_size=12, intermediate_size=20, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, attn_layer_indices=[2], mamba_n_heads=8,
                      mamba_d_head=3, mamba_n_groups=2, mamba_d_state=5, mamba_d_conv=4, mamba_expand=2,
                      mamba_chunk_size=5))
    _spread_norms(hf)
    return hf


def _granitemoehybrid() -> torch.nn.Module:
    config, model = _require("GraniteMoeHybridConfig", "GraniteMoeHybridForCausalLM")
    # as Bamba's but 2 query heads of size 6 on one key/value head (full RoPE needs an even size), every
    # μP multiplier away from 1, and a mixture of 4 experts (top 2)
    # plus the shared MLP after every layer
    hf = model(config(vocab_size=50, hidden_size=12, intermediate_size=8, shared_intermediate_size=10,
                      num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                      layer_types=["linear_attention", "linear_attention", "full_attention"], mamba_n_heads=8,
                      mamba_d_head=3, mamba_n_groups=2, mamba_d_state=5, mamba_d_conv=4, mamba_expand=2,
                      mamba_chunk_size=5, num_local_experts=4, num_experts_per_tok=2,
                      position_embedding_type="rope", embedding_multiplier=1.7, residual_multiplier=0.6,
                      attention_multiplier=0.4, logits_scaling=2.5))
    hf.config._experts_implementation = "eager"  # the grouped-matmul experts refuse float64
    _spread_norms(hf)
    return hf


def _nemotron_h() -> torch.nn.Module:
    config, model = _require("NemotronHConfig", "NemotronHForCausalLM")
    # blocks: Mamba-2, Mamba-2 (as Bamba's), mixture of experts (4 experts in 2 groups, top 2 from the best
    # group), attention without positions (4 query / 2 key-value heads of size 3), squared-ReLU MLP
    hf = model(config(vocab_size=50, hidden_size=12, intermediate_size=20,
                      layers_block_type=["linear_attention", "linear_attention", "moe", "full_attention", "mlp"],
                      num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2, head_dim=3,
                      mamba_num_heads=8, mamba_head_dim=3, n_groups=2, ssm_state_size=5, conv_kernel=4,
                      chunk_size=5, n_routed_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1,
                      moe_intermediate_size=6, moe_shared_expert_intermediate_size=8, routed_scaling_factor=1.5,
                      norm_topk_prob=True))
    hf.config._experts_implementation = "eager"  # the grouped-matmul experts refuse float64
    with torch.no_grad():  # the library starts the router at zero: spread it and its correction bias
        router = hf.model.layers[2].mixer.gate
        router.weight.normal_(0.0, 1.0)
        router.e_score_correction_bias.normal_(0.0, 0.1)
    _spread_norms(hf)
    return hf


def _falcon_h1() -> torch.nn.Module:
    config, model = _require("FalconH1Config", "FalconH1ForCausalLM")
    # two blocks of parallel Mamba-2 (as Bamba's) and attention (2 query heads of size 6 on one key/value
    # head), every μP multiplier away from 1, the gated norm on and applied before the gate
    hf = model(config(vocab_size=50, hidden_size=12, intermediate_size=20, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, mamba_n_heads=8, mamba_d_head=3,
                      mamba_n_groups=2, mamba_d_state=5, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=5,
                      mamba_d_ssm=24, mamba_rms_norm=True, mamba_norm_before_gate=True, key_multiplier=0.7,
                      attention_in_multiplier=1.3, attention_out_multiplier=0.8, ssm_in_multiplier=1.2,
                      ssm_out_multiplier=0.9, embedding_multiplier=1.5, lm_head_multiplier=0.6,
                      mlp_multipliers=[1.1, 0.9], ssm_multipliers=[1.1, 0.9, 1.2, 0.8, 1.3]))
    _spread_norms(hf)
    return hf


def _falcon_h1_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Falcon-H1's cache: each block's conv window and SSM state and its keys and values, in one state."""
    cache = hf(ids, use_cache=True).cache
    return [{"conv": cache.get_conv_state(layer)[..., 1:], "state": cache.get_recurrent_state(layer),
             "k": entry.keys, "v": entry.values} for layer, entry in enumerate(cache.layers)]


def _spread_norms(hf: torch.nn.Module) -> None:
    """Norm weights away from their init of ones, so that every norm's weight is exercised."""
    with torch.no_grad():
        for name, parameter in hf.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.normal_(1.0, 0.3)


def _hybrid_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The library's DynamicCache of a Mamba-2 hybrid: conv window (d_conv − 1 of its d_conv inputs) and
    SSM state for the Mamba layers, keys and values for the attention layers."""
    cache = hf(ids, use_cache=True).cache
    states = []
    for layer, entry in enumerate(cache.layers):
        if hasattr(entry, "conv_states"):
            states.append({"conv": cache.get_conv_state(layer)[..., 1:], "state": cache.get_recurrent_state(layer)})
        elif getattr(entry, "keys", None) is None:  # a position-wise block (MLP, experts): no state
            states.append({})
        else:
            states.append({"k": entry.keys, "v": entry.values})
    return states


def _jamba() -> torch.nn.Module:
    config, model = _require("JambaConfig", "JambaForCausalLM")
    # layers 0, 1: Mamba-1 (d_inner 32, Δ rank 3); layer 2: attention (4 query heads, 2 key/value groups);
    # layer 1's MLP is a mixture of four experts (top 2)
    hf = model(config(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, attn_layer_period=3, attn_layer_offset=2,
                      expert_layer_period=2, expert_layer_offset=1, num_experts=4, num_experts_per_tok=2,
                      mamba_d_state=4, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=3))
    hf.config._experts_implementation = "eager"  # the grouped-matmul experts refuse float64
    with torch.no_grad():  # norm weights away from their init of ones, so that they are exercised
        for name, parameter in hf.named_parameters():
            if "norm" in name:
                parameter.normal_(1.0, 0.3)
    return hf


def _jamba_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The library's cache: conv window and SSM state for Mamba layers, keys and values for attention."""
    cache = hf(ids, use_cache=True).cache
    states = []
    for layer, kind in enumerate(hf.config.layers_block_type):
        if kind == "mamba":
            states.append({"conv": cache.get_conv_state(layer)[..., 1:], "state": cache.get_recurrent_state(layer)})
        else:
            states.append({"k": cache.layers[layer].keys, "v": cache.layers[layer].values})
    return states


def _zamba() -> torch.nn.Module:
    config, model = _require("ZambaConfig", "ZambaForCausalLM")
    # layers 0, 1: Mamba-1 with two Mamba heads (d_inner 32, Δ rank 3); layers 2, 3: hybrid (the shared
    # attention block, 4 query heads of size 8 over 2 key/value groups, then Mamba)
    hf = model(config(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, n_mamba_heads=2, attn_layer_period=1,
                      attn_layer_offset=0, mamba_d_state=4, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=3))
    with torch.no_grad():  # norm weights away from their init of ones; projections (init std 0.02) and Δ
        for name, parameter in hf.named_parameters():  # large enough that every layer moves the logits
            if "norm" in name:
                parameter.normal_(1.0, 0.3)
            elif name.endswith(("x_proj_weight", "dt_proj_bias")):
                parameter.normal_(0.0, 0.5)
            elif name.endswith(("proj.weight", "linear.weight")):
                parameter.normal_(0.0, 0.15)
    return hf


def _zamba_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The library's cache: conv window and SSM state (per Mamba head, flattened) per layer, and keys and
    values of the hybrid layers' shared attention."""
    cache = hf(ids, use_cache=True).cache
    states = []
    for layer, kind in enumerate(hf.config.layers_block_type):
        state = {"conv": cache.get_conv_state(layer)[..., 1:], "state": cache.get_recurrent_state(layer).flatten(1, 2)}
        if kind == "hybrid":
            state.update(k=cache.layers[layer].keys, v=cache.layers[layer].values)
        states.append(state)
    return states


def _zamba2(rope: bool = True) -> torch.nn.Module:
    config, model = _require("Zamba2Config", "Zamba2ForCausalLM")
    # layer 0: Mamba-2 (8 heads of odd size 3 in 2 groups, chunk 5 that divides no test length); layers 1-3:
    # hybrid, the two shared blocks reused in turn (layers 1 and 3 share block 0), LoRA rank 3 on q, k, v
    # and the MLP per depth, RoPE on 4 heads of size 6 (the library's adapters need as many key/value heads).
    # Without RoPE (`rope=False`): no attention adapters, 8 heads of odd size 3 on 4 key/value heads, one block.
    heads = {"num_attention_heads": 4, "num_key_value_heads": 4} if rope else {
        "num_attention_heads": 8, "num_key_value_heads": 4}
    hf = model(config(vocab_size=50, hidden_size=12, intermediate_size=20, num_hidden_layers=4, **heads,
                      n_mamba_heads=8, mamba_ngroups=2, mamba_d_state=5, mamba_d_conv=4, mamba_expand=2,
                      chunk_size=5, layers_block_type=["linear_attention", "hybrid", "hybrid", "hybrid"],
                      num_mem_blocks=2 if rope else 1, use_shared_attention_adapter=rope, adapter_rank=3,
                      use_mem_rope=rope, rope_parameters={"rope_type": "default", "rope_theta": 100.0}))
    with torch.no_grad():  # norms away from ones; projections, LoRA (init std 0.02) and the shared
        for name, parameter in hf.named_parameters():  # block's linear large enough to move the logits
            if "norm" in name and name.endswith("weight"):
                parameter.normal_(1.0, 0.3)
            elif "adapter" in name or name.endswith(("linear.weight", "proj.weight")):
                parameter.normal_(0.0, 0.15 if "adapter" in name else 0.1)
    return hf


def _zamba2_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The library's cache: every layer's conv window and SSM state, and the hybrid layers' own keys and
    values of their use of the shared attention."""
    cache = hf(ids, use_cache=True).cache
    states = []
    for layer, kind in enumerate(hf.config.layers_block_type):
        state = {"conv": cache.get_conv_state(layer)[..., 1:], "state": cache.get_recurrent_state(layer)}
        if kind == "hybrid":
            state.update(k=cache.layers[layer].keys, v=cache.layers[layer].values)
        states.append(state)
    return states


def _lfm2() -> torch.nn.Module:
    config, model = _require("Lfm2Config", "Lfm2ForCausalLM")
    # layers 0, 1: gated short convolutions (window L = 3, with biases); layer 2: attention (3 query heads
    # of size 6 on one key/value head, q/k norms, RoPE)
    hf = model(config(vocab_size=50, hidden_size=18, intermediate_size=24, num_hidden_layers=3,
                      num_attention_heads=3, num_key_value_heads=1, conv_bias=True, conv_L_cache=3,
                      block_multiple_of=4, layer_types=["conv", "conv", "full_attention"]))
    with torch.no_grad():  # norm weights away from their init of ones; projections (init std 0.02) large
        for name, parameter in hf.named_parameters():  # enough that every layer moves the logits
            if "norm" in name:
                parameter.normal_(1.0, 0.3)
            elif name.endswith(("proj.weight", "conv.weight", "bias")):
                parameter.normal_(0.0, 0.25)
    return hf


def _lfm2_cache_states(hf: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The library's cache: the conv window (it keeps L inputs, we keep L - 1), keys and values."""
    cache = hf(ids, use_cache=True).cache
    return [{"state": cache.get_conv_state(layer)[..., 1:]} if kind == "conv"
            else {"k": cache.layers[layer].keys, "v": cache.layers[layer].values}
            for layer, kind in enumerate(hf.config.layer_types)]


def _library_logits(hf: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The library's own logits: in float64 too, RecurrentGemma accumulates its RG-LRU and xLSTM its step
    kernel state in float32 (and xLSTM returns float32 logits)."""
    return hf(ids).logits


FAMILIES = {
    "mamba": Family("mamba", "MambaForCausalLM", _mamba, "state", _mamba_cache_states),
    "falcon_mamba": Family("falcon_mamba", "FalconMambaForCausalLM", _falcon_mamba, "state",
                           _mamba_cache_states),
    "mamba2": Family("mamba2", "Mamba2ForCausalLM", _mamba2, "state", _mamba_cache_states),
    "rwkv": Family("rwkv", "RwkvForCausalLM", _rwkv, "num", _rwkv_cache_states,
                   supports_padding=False, state_lag=1),
    "recurrent_gemma": Family("recurrent_gemma", "RecurrentGemmaForCausalLM", _recurrent_gemma, "h",
                              _recurrent_gemma_cache_states, state_layers=(0, 1),
                              float64_logits=_library_logits, float64_tolerance=1e-5),
    "xlstm": Family("xlstm", "xLSTMForCausalLM", _xlstm, "C", _xlstm_cache_states, supports_padding=False,
                    float64_logits=_library_logits, float64_tolerance=1e-5),
    "qwen3_next": Family("qwen3_next", "Qwen3NextForCausalLM", _qwen3_next, "state", _delta_rule_cache_states,
                         state_layers=(0, 1), float64_logits=_library_logits, float64_tolerance=1e-6),
    "kimi_linear": Family("kimi_linear", "KimiLinearForCausalLM", _kimi_linear, "state", _kimi_linear_cache_states,
                          state_layers=(0, 1), float64_logits=_library_logits, float64_tolerance=1e-6),
    "olmo_hybrid": Family("olmo_hybrid", "OlmoHybridForCausalLM", _olmo_hybrid, "state", _delta_rule_cache_states,
                          state_layers=(0, 1), float64_logits=_library_logits, float64_tolerance=1e-6),
    "bamba": Family("bamba", "BambaForCausalLM", _bamba, "state", _hybrid_cache_states, state_layers=(0, 1),
                    float64_logits=_library_logits, float64_tolerance=1e-6),
    "granitemoehybrid": Family("granitemoehybrid", "GraniteMoeHybridForCausalLM", _granitemoehybrid, "state",
                               _hybrid_cache_states, state_layers=(0, 1), float64_logits=_library_logits,
                               float64_tolerance=1e-6),
    "nemotron_h": Family("nemotron_h", "NemotronHForCausalLM", _nemotron_h, "state", _hybrid_cache_states,
                         state_layers=(0, 1), float64_logits=_library_logits, float64_tolerance=1e-6),
    "falcon_h1": Family("falcon_h1", "FalconH1ForCausalLM", _falcon_h1, "state", _falcon_h1_cache_states,
                        float64_logits=_library_logits, float64_tolerance=1e-6),
    "jamba": Family("jamba", "JambaForCausalLM", _jamba, "state", _jamba_cache_states, state_layers=(0, 1),
                    float64_logits=_library_logits, float64_tolerance=1e-6),
    "zamba": Family("zamba", "ZambaForCausalLM", _zamba, "state", _zamba_cache_states,
                    float64_logits=_library_logits, float64_tolerance=1e-6),
    "zamba2": Family("zamba2", "Zamba2ForCausalLM", _zamba2, "state", _zamba2_cache_states,
                     float64_logits=_library_logits, float64_tolerance=1e-6),
    "lfm2": Family("lfm2", "Lfm2ForCausalLM", _lfm2, "state", _lfm2_cache_states, state_lag=1,
                   state_layers=(0, 1), float64_logits=_library_logits, float64_tolerance=1e-6),
}


def tiny(family: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    """A tiny `transformers` model of `family`, random weights from `seed`, in eval mode."""
    torch.manual_seed(seed)
    return FAMILIES[family].build().to(dtype).eval()


def tokens(batch: int, length: int, seed: int = 0, vocab: int = 50) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> str:
    return request.param

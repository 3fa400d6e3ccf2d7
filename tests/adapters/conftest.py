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


FAMILIES = {
    "mamba": Family("mamba", "MambaForCausalLM", _mamba, "state", _mamba_cache_states),
    "falcon_mamba": Family("falcon_mamba", "FalconMambaForCausalLM", _falcon_mamba, "state",
                           _mamba_cache_states),
    "mamba2": Family("mamba2", "Mamba2ForCausalLM", _mamba2, "state", _mamba_cache_states),
    "rwkv": Family("rwkv", "RwkvForCausalLM", _rwkv, "num", _rwkv_cache_states,
                   supports_padding=False, state_lag=1),
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

"""`HookedKvAttention`: a hybrid model's softmax attention layer, hooked, with its KV cache as the state.

Grouped-query causal attention as the `transformers` hybrids write it (Jamba, Zamba, LFM2): per head
h, pattern_t = softmax(q_t K_{≤t}ᵀ · scale), z_t = pattern_t V_{≤t}, out = W_o z. The keys and values
read so far (rotated keys where the family uses RoPE) are the layer's state, of any length, so
`initial_state=` continues a text and `generate` steps one token at a time with every hook firing.
Families differ in how q, k, v are formed (`project`), in RoPE and in the names of the projections.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from workbench.adapters.base import AdapterMixer
from workbench.adapters.recurrent_gemma import rotate
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import State
from workbench.models.specs import RESID, HookSpec

__all__ = ["HookedKvAttention", "KvCacheMixer", "valid_keys"]

HeadNorm = Callable[[Tensor], Tensor]  # [batch, pos, heads, d_head] -> the same, normalised per head


def valid_keys(past: int, pos: int, mask: Tensor | None, device: torch.device) -> Tensor:
    """[batch or 1, pos, past+pos]: key j is visible to query t (causal, cached keys all visible, no padding)."""
    causal = torch.ones(pos, past + pos, dtype=torch.bool, device=device).tril(past)
    if mask is None:
        return causal[None]
    keys = torch.cat([mask.new_ones(mask.shape[0], past), mask], dim=1).bool()  # [batch, past+pos]
    return causal[None] & keys[:, None, :]


class KvCacheMixer(AdapterMixer):
    """An attention mixer whose state is a cache of per-position tensors (the library's KV cache).

    `past` is the cache length of the current call: the model's dimension `past`, and `key_pos` = past +
    pos for the pattern. `cache_key` names the state entry whose dimension 2 is that length.
    """

    cache_key = "k"
    past = 0  # positions in the initial state of the current call

    def dimension_sizes(self, batch: int = 1, pos: int = 1) -> dict[str, int]:
        return {**super().dimension_sizes(batch, pos), "past": self.past, "key_pos": self.past + pos}

    def prepare_state(self, state: Mapping[str, Tensor] | None, x: Tensor) -> State:
        """As every mixer's, with the cache length taken from the given cache (0 without a state)."""
        cached = None if state is None else state.get(self.cache_key)
        self.past = cached.shape[2] if isinstance(cached, Tensor) and cached.ndim == 4 else 0
        return super().prepare_state(state, x)

    def forward(self, x: Tensor, state: Mapping[str, Tensor] | None = None, path: ExecutionPath = "fused",
                mask: Tensor | None = None) -> tuple[Tensor, State]:
        """As every mixer's; afterwards the zero state is again an empty cache (`past` = 0), which the
        model's initial-state check reads as 'any cache length'."""
        try:
            return super().forward(x, state, path, mask)
        finally:
            self.past = 0

    _valid_keys = staticmethod(valid_keys)

    def rotate_at(self, q: Tensor, k: Tensor, v: Tensor, past: int) -> tuple[Tensor, Tensor]:
        """RoPE at absolute positions past.. past+pos (q [batch, pos, H, d], k [batch, pos, H_kv, d]) with the
        model's rotary embedding `self.rotary` (a submodule, so never a class attribute); none without it."""
        rotary: nn.Module | None = getattr(self, "rotary", None)
        if rotary is None:
            return q, k
        batch, pos = q.shape[:2]
        absolute = torch.arange(past, past + pos, device=q.device).expand(batch, pos)  # [batch, pos]
        cos, sin = (t.to(q.dtype) for t in rotary(v, absolute))  # [batch, pos, rot]
        return rotate(q, cos, sin), rotate(k, cos, sin)

    def hooked_pattern(self, scores: Tensor, past: int, mask: Tensor | None) -> Tensor:
        """scores [batch, H, pos, past+pos] -> the hooked softmax pattern [batch, pos, H, past+pos]; keys a
        query may not see get 0, and a query that sees none (a padded one) gets an all-zero row."""
        valid = valid_keys(past, scores.shape[2], mask, scores.device)  # [batch, pos, past+pos]
        pattern = torch.softmax(scores.masked_fill(~valid[:, None], float("-inf")), dim=-1)
        pattern = torch.where(valid.any(-1)[:, None, :, None], pattern, torch.zeros_like(pattern))
        return self.hook_pattern(pattern.transpose(1, 2))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, state: State, mask: Tensor | None,
               scaling: float) -> tuple[Tensor, State]:
        """Causal GQA of this call's queries over the cache then this call's keys, pattern and z hooked.

        q [batch, pos, H, d], k and v [batch, pos, H_kv, d] (k rotated) -> z [batch, pos, H, d_v] and the
        new cache {"k", "v"} [batch, H_kv, past+pos, d].
        """
        keys = torch.cat([state["k"], k.transpose(1, 2)], dim=2)  # [batch, n_kv, past+pos, d_head]
        values = torch.cat([state["v"], v.transpose(1, 2)], dim=2)
        repeat = q.shape[2] // k.shape[2]
        scores = q.transpose(1, 2) @ keys.repeat_interleave(repeat, dim=1).transpose(2, 3) * scaling
        pattern = self.hooked_pattern(scores, state["k"].shape[2], mask)  # [batch, pos, n_heads, past+pos]
        z = pattern.transpose(1, 2) @ values.repeat_interleave(repeat, dim=1)  # [batch, n_heads, pos, d_head]
        return self.hook_z(z.transpose(1, 2)), {"k": keys, "v": values}


class HookedKvAttention(KvCacheMixer):
    """Causal GQA over the library's q/k/v/out projections, every step hooked; state = the KV cache.

    `rotary`: the model's rotary embedding module (None: no positional encoding, as in Jamba and Zamba);
    `q_norm`, `k_norm`: per-head norms applied before RoPE (LFM2), or None.
    """

    quantities = ("q", "k", "v", "pattern", "z", "out")
    state_names = ("k", "v")

    def __init__(self, hf_attention: nn.Module, sizes: Mapping[str, int], out_proj: nn.Module,
                 rotary: nn.Module | None = None, q_norm: HeadNorm | None = None, k_norm: HeadNorm | None = None):
        super().__init__(sizes)
        self.hf = hf_attention  # shares q_proj, k_proj, v_proj and the output projection
        self.out_proj = out_proj
        self.rotary = rotary  # buffers only
        self.q_norm, self.k_norm = q_norm, k_norm

    def hook_specs(self) -> dict[str, HookSpec]:
        where = "before RoPE" if self.rotary is not None else "(no positional encoding)"
        normed = " after the per-head norm" if self.q_norm is not None else ""
        return {
            "q": (("batch", "pos", "n_heads", "d_head"), f"queries{normed}, {where}"),
            "k": (("batch", "pos", "n_kv_heads", "d_head"), f"keys{normed}, {where}"),
            "v": (("batch", "pos", "n_kv_heads", "d_head"), "values"),
            "pattern": (("batch", "pos", "n_heads", "key_pos"),
                        "attention weights over the cached keys then this call's keys"),
            "z": (("batch", "pos", "n_heads", "d_head"), "pattern-weighted values per head"),
            "out": (RESID, "layer output W_o z_t"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        rotated = "rotated keys" if self.rotary is not None else "keys"
        return {
            "k": (("batch", "n_kv_heads", "past", "d_head"), f"the {rotated} read so far (KV cache)"),
            "v": (("batch", "n_kv_heads", "past", "d_head"), "the values read so far (KV cache)"),
        }

    def project(self, x_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [batch, pos, d_in] -> q [batch, pos, n_heads, d_head], k, v [batch, pos, n_kv_heads, d_head]."""
        hf, sz = self.hf, self.sizes
        batch, pos = x_in.shape[:2]
        q = hf.q_proj(x_in).view(batch, pos, sz["n_heads"], sz["d_head"])
        k = hf.k_proj(x_in).view(batch, pos, sz["n_kv_heads"], sz["d_head"])
        v = hf.v_proj(x_in).view(batch, pos, sz["n_kv_heads"], sz["d_head"])
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.k_norm is not None:
            k = self.k_norm(k)
        return q, k, v

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        batch, pos = x_in.shape[:2]
        self.last_kernel = "full attention (no recurrence)"
        q, k, v = self.project(x_in)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q, k = self.rotate_at(q, k, v, state["k"].shape[2])
        z, cache = self.attend(q, k, v, state, mask, self.hf.scaling)  # z [batch, pos, n_heads, d_head]
        out = self.hook_out(self.out_proj(z.reshape(batch, pos, -1)))  # [batch, pos, d_model]
        return out, cache

"""RWKV-4 from `transformers` (Peng et al. 2023, *RWKV: Reinventing RNNs for the Transformer Era*).

Time mixing: token shift, r_t = σ(W_r x'_t), k_t = W_k x'_t, v_t = W_v x'_t; the WKV recurrence in
the numerically stable form `transformers` uses, with the state (num, den, max) meaning
a_t = num_t·e^{max_t}, b_t = den_t·e^{max_t}:

    wkv_t = (e^{max_{t-1}-q} num_{t-1} + e^{u+k_t-q} v_t) / (e^{max_{t-1}-q} den_{t-1} + e^{u+k_t-q}),
            q = max(max_{t-1}, u + k_t)
    max_t = max(max_{t-1} − w_t, k_t),  num_t = e^{max_{t-1}−w_t−max_t} num_{t-1} + e^{k_t−max_t} v_t

and out = W_o(r ⊙ wkv). Channel mixing: σ(W_r x') ⊙ W_v relu(W_k x')². The decay w = e^{time_decay}
is hooked per position, so an edit to it acts at that step only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import (
    AdapterBlock,
    AdapterMixer,
    HookedNorm,
    HookedTransformersLM,
)
from workbench.adapters.placement import align_hooks
from workbench.kernels import linear_scan
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import Emit, State, run_recurrence
from workbench.models.specs import RESID, HookSpec, shared_dims

BPA = ("batch", "pos", "d_att")
NO_HISTORY = -1e38  # max_{-1}: the stable form's exponent before any token (as the library's CPU path)
CHUNK = 64  # positions per chunk of the fused scan: the running exponent sum stays small


def token_shift(x: Tensor, previous: Tensor) -> Tensor:
    """x'_{t} = x_{t-1}, with x_{-1} = previous: [batch, pos, d] -> [batch, pos, d]."""
    return torch.cat([previous[:, None], x[:, :-1]], dim=1)


def wkv_step(k: Tensor, v: Tensor, w: Tensor, u: Tensor, state: State) -> tuple[Tensor, State]:
    """One step of the stable WKV recurrence: (wkv_t, state_t), every tensor [batch, d_att]."""
    num, den, mx = state["num"], state["den"], state["max"]
    q = torch.maximum(mx, u + k)
    e_old, e_new = torch.exp(mx - q), torch.exp(u + k - q)
    wkv = (e_old * num + e_new * v) / (e_old * den + e_new)
    new_max = torch.maximum(mx - w, k)
    e_old, e_new = torch.exp(mx - w - new_max), torch.exp(k - new_max)
    return wkv, {"num": e_old * num + e_new * v, "den": e_old * den + e_new, "max": new_max}


def wkv_chunked(k: Tensor, v: Tensor, w: Tensor, u: Tensor, state: State) -> tuple[dict[str, Tensor], State]:
    """All positions of the stable WKV recurrence with parallel scans, chunk by chunk.

    Within a chunk, with W_t = Σ_{j≤t} w_j, the exponent is max_t = M_t − W_t where M is the running
    maximum of (max_{-1}, k_i + W_i), so num and den are linear scans with decays e^{M_{t-1}−M_t}.
    """
    initial = state
    # exponents in float64 for float32 inputs: M and W grow with the chunk and cancel in M − W
    wide = torch.float64 if k.dtype in (torch.float32, torch.float16, torch.bfloat16) else k.dtype
    values: dict[str, list[Tensor]] = {"num": [], "den": [], "max": []}
    for start in range(0, k.shape[1], CHUNK):
        kc, vc, wc = (x[:, start:start + CHUNK] for x in (k, v, w))  # [batch, chunk, d_att]
        kc, m0 = kc.to(wide), state["max"].to(wide)[:, None]
        W = wc.to(wide).cumsum(1)
        M = torch.maximum(torch.cummax(kc + W, dim=1).values, m0)
        M_prev = torch.cat([m0, M[:, :-1]], dim=1)
        decay = torch.exp(M_prev - M).to(k.dtype)[..., None]  # [batch, chunk, d_att, 1]
        weight = torch.exp(kc + W - M).to(k.dtype)  # [batch, chunk, d_att]
        h0 = torch.stack([state["num"], state["den"]], dim=-1)  # [batch, d_att, 2]
        h = linear_scan(decay, torch.stack([weight * vc, weight], dim=-1), h0)  # [batch, chunk, d_att, 2]
        chunk = {"num": h[..., 0], "den": h[..., 1], "max": (M - W).to(k.dtype)}
        for name, value in chunk.items():
            values[name].append(value)
        state = {name: value[:, -1] for name, value in chunk.items()}
    out = {name: torch.cat(parts, dim=1) for name, parts in values.items()}  # [batch, pos, d_att]
    # the state before each position: the initial state, then every state but the last
    num, den, mx = (torch.cat([initial[n][:, None], out[n][:, :-1]], dim=1) for n in ("num", "den", "max"))
    q = torch.maximum(mx, u + k)
    e_old, e_new = torch.exp(mx - q), torch.exp(u + k - q)
    out["wkv"] = (e_old * num + e_new * v) / (e_old * den + e_new)
    return out, state


class HookedRwkvTimeMix(AdapterMixer):
    """`transformers` RwkvSelfAttention recomputed with r, k, v, w, the WKV state and output hooked."""

    quantities = ("r", "k", "v", "w", "wkv", "num", "den", "max", "out")
    state_names = ("shift", "num", "den", "max")

    def __init__(self, hf_attention: nn.Module, sizes: Mapping[str, int]):
        super().__init__(sizes)
        self.hf = hf_attention  # shares time_decay, time_first, time_mix_*, key, value, receptance, output
        self.output_divisor = lambda: 1  # set by the model where `output` is offloaded (see HookedRwkv)

    def hook_specs(self) -> dict[str, HookSpec]:
        specs = shared_dims(BPA, {
            "r": "receptance r_t = σ(W_r (μ_r x_t + (1−μ_r) x_{t−1}))",
            "k": "key k_t = W_k (μ_k x_t + (1−μ_k) x_{t−1})",
            "v": "value v_t = W_v (μ_v x_t + (1−μ_v) x_{t−1})",
            "w": "channel decay w = e^{time_decay} applied at step t",
            "wkv": "wkv_t: decayed average of past values with the bonus u on the current one",
            "num": "numerator state num_t = a_t e^{−max_t}",
            "den": "denominator state den_t = b_t e^{−max_t}",
            "max": "exponent max_t of the stable form",
        })
        specs["out"] = (RESID, "time-mixing output W_o (r_t ⊙ wkv_t)")
        return specs

    def state_specs(self) -> dict[str, HookSpec]:
        return {
            "shift": (("batch", "d_model"), "previous token's normalised input x_{-1}"),
            "num": (("batch", "d_att"), "initial numerator state"),
            "den": (("batch", "d_att"), "initial denominator state"),
            "max": (("batch", "d_att"), "initial exponent (−1e38: no history)"),
        }

    def zero_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        state = super().zero_state(batch, device, dtype)
        state["max"] = torch.full_like(state["max"], NO_HISTORY)
        return state

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        wkv, new = wkv_step(inputs["k"], inputs["v"], inputs["w"], self.hf.time_first, state)
        emit("wkv", wkv)
        return {name: emit(name, new[name]) for name in ("num", "den", "max")}

    @staticmethod
    def _state_at(values: Mapping[str, Tensor], t: int) -> State:
        return {name: values[name][:, t] for name in ("num", "den", "max")}

    def mix(self, x: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf = self.hf
        shifted = token_shift(x, state["shift"])  # [batch, pos, d_model]

        def mix(mu: Tensor) -> Tensor:
            return x * mu + shifted * (1 - mu)

        k = self.hook_k(hf.key(mix(hf.time_mix_key)))  # [batch, pos, d_att]
        v = self.hook_v(hf.value(mix(hf.time_mix_value)))
        r = self.hook_r(torch.sigmoid(hf.receptance(mix(hf.time_mix_receptance))))
        w = self.hook_w(torch.exp(hf.time_decay).to(k.dtype).expand_as(k).clone())
        inputs = {"k": k, "v": v, "w": w}
        recurrent = {name: state[name] for name in ("num", "den", "max")}

        def scan(wanted: set[str], start: int = 0, stop: int | None = None, before: State = recurrent,
                 ) -> tuple[dict[str, Tensor], State]:
            self.last_kernel = "chunked max-shifted linear scan (workbench.kernels)"
            return wkv_chunked(*(t[:, start:stop] for t in (k, v, w)), hf.time_first, before)

        values, final = run_recurrence(
            self._step, inputs, recurrent, self.hook_points(("wkv", "num", "den", "max")),
            self._state_at, ("num", "den", "max"), needed=("wkv",), first_pass=scan if fused else None,
            segment_pass=scan if fused else None,
        )
        out = self.hook_out(hf.output(r * values["wkv"]) / self.output_divisor())  # [batch, pos, d_model]
        return out, {"shift": x[:, -1], **final}


class HookedRwkvChannelMix(nn.Module):
    """`transformers` RwkvFeedForward, hidden key and receptance hooked (Peng et al. 2023, channel mixing)."""

    def __init__(self, hf_feed_forward: nn.Module):
        super().__init__()
        self.hf = hf_feed_forward
        self.value_divisor = lambda: 1  # set by the model where `value` is offloaded (see HookedRwkv)
        self.hook_k = ScopedHookPoint()
        self.hook_r = ScopedHookPoint()

    def forward(self, x: Tensor, previous: Tensor) -> Tensor:
        hf, shifted = self.hf, token_shift(x, previous)
        k = self.hook_k(torch.square(F.relu(hf.key(x * hf.time_mix_key + shifted * (1 - hf.time_mix_key)))))
        mix_r = x * hf.time_mix_receptance + shifted * (1 - hf.time_mix_receptance)
        r = self.hook_r(torch.sigmoid(hf.receptance(mix_r)))
        return r * (hf.value(k) / self.value_divisor())  # [batch, pos, d_model]


class HookedRwkvBlock(AdapterBlock):
    """resid_mid = resid_pre + TimeMix(ln1(resid_pre));
    resid_post = resid_mid + ChannelMix(ln2(resid_mid))."""

    def __init__(self, hf_block: nn.Module, sizes: Mapping[str, int], halve: bool):
        super().__init__(hf_block.ln1, HookedRwkvTimeMix(hf_block.attention, sizes))
        self.ln2 = HookedNorm(hf_block.ln2)
        self.mlp = HookedRwkvChannelMix(hf_block.feed_forward)
        self.hook_resid_mid = ScopedHookPoint()
        self.hook_mlp_out = ScopedHookPoint()
        self.halve = halve  # the library's inference-time rescaling: resid / 2 after this block
        self.rescaled = lambda: False  # set by the model: are the library's weights rescaled now?

    def extra_hook_specs(self) -> dict[str, HookSpec]:
        return {
            "hook_resid_mid": (RESID, "residual after time mixing"),
            "ln2.hook_normalized": (RESID, "normalised input to channel mixing"),
            "mlp.hook_k": (("batch", "pos", "d_mlp"), "channel-mix hidden relu(W_k x')²"),
            "mlp.hook_r": (RESID, "channel-mix receptance σ(W_r x')"),
            "hook_mlp_out": (RESID, "channel-mix output added to the residual"),
        }

    def zero_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        state = self.mixer.zero_state(batch, device, dtype)
        state["ffn_shift"] = torch.zeros_like(state["shift"])
        return state

    def forward(self, resid: Tensor, state: Mapping[str, Tensor] | None, path: ExecutionPath,
                mask: Tensor | None = None) -> tuple[Tensor, State]:
        state = self.zero_state(resid.shape[0], resid.device, resid.dtype) if state is None else state
        resid = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        mixed, new_state = self.mixer(self.ln1(resid), state, path, mask)
        resid = self.hook_resid_mid(resid + self.hook_mixer_out(mixed))
        normed = self.ln2(resid)
        resid = resid + self.hook_mlp_out(self.mlp(normed, state["ffn_shift"].to(resid.dtype)))
        if self.halve and self.rescaled():
            resid = resid / 2
        return self.hook_resid_post(resid), {**new_state, "ffn_shift": normed[:, -1]}


class HookedRwkv(HookedTransformersLM):
    """RwkvForCausalLM (RWKV-4) under the hook contract (Peng et al. 2023)."""

    family = "rwkv"
    padding_refusal = ("RwkvForCausalLM has no attention mask (transformers ignores it, and padding "
                       "enters the recurrent state)")

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, rwkv = hf_model.config, hf_model.rwkv
        d_att = cfg.attention_hidden_size or cfg.hidden_size
        sizes = {"d_model": cfg.hidden_size, "d_att": d_att,
                 "d_mlp": cfg.intermediate_size or 4 * cfg.hidden_size, "d_vocab": cfg.vocab_size}
        every = cfg.rescale_every
        blocks = [HookedRwkvBlock(block, sizes, halve=every > 0 and (i + 1) % every == 0)
                  for i, block in enumerate(rwkv.blocks)]
        for block in blocks:
            block.rescaled = lambda: bool(rwkv.layers_are_rescaled)
        super().__init__(hf_model, sizes, blocks, ln_final=rwkv.ln_out, embed=rwkv.embeddings,
                         unembed=hf_model.head, path=path)
        self.pre_ln = rwkv.blocks[0].pre_ln
        for layer, block in enumerate(blocks):
            divisor = 2 ** (layer // every) if every > 0 else 1
            block.mixer.output_divisor = _offloaded_rescale(block.mixer.hf.output, divisor, rwkv)
            block.mlp.value_divisor = _offloaded_rescale(block.mlp.hf.value, divisor, rwkv)
        self.setup()

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """The embedding after RWKV's extra LayerNorm (the library applies it inside block 0)."""
        return self.pre_ln(self.embed(tokens))

    def forward(self, inputs: Tensor | str | Sequence[str] | None = None, *args: Any, **kwargs: Any) -> Any:
        """As `HookedLanguageModel.forward`, after the library's inference-time rescaling of the weights."""
        if not self.hf_model.training:
            # as the library does on every inference call: output weights divided by 2^(layer // every)
            self.hf_model.rwkv._rescale_layers()  # noqa: SLF001 (the library's own inference step)
        return super().forward(inputs, *args, **kwargs)


def _offloaded_rescale(linear: nn.Module, divisor: int, rwkv: nn.Module) -> Callable[[], int]:
    """What to divide `linear`'s output by: the library halves these weights in place for inference
    (`_rescale_layers`), which an offloaded weight (on `meta`, reloaded from its unscaled copy) misses;
    dividing the output by the same power of two gives the in-place result to the bit."""
    if not any(hook.offload for hook in align_hooks(linear)):
        return lambda: 1
    return lambda: divisor if rwkv.layers_are_rescaled else 1

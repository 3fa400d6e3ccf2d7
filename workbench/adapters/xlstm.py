"""xLSTM (mLSTM blocks, as NX-AI's xLSTM-7b) from `transformers` (Beck et al. 2024, *xLSTM: Extended Long
Short-Term Memory*, section 2.3; Beck et al. 2025, *xLSTM 7B*).

Per head, with soft-capped gate pre-activations ĩ_t, f̃_t and the stabiliser m (Beck et al. 2024, section 2.3
and the stabilised form of its appendix; the library's `mlstm_recurrent_step_native`):

    m_t = max(log σ(f̃_t) + m_{t−1}, ĩ_t)
    f'_t = exp(log σ(f̃_t) + m_{t−1} − m_t),   i'_t = exp(ĩ_t − m_t)
    C_t = f'_t C_{t−1} + i'_t k_t v_tᵀ,        n_t = f'_t n_{t−1} + i'_t k_t
    h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, exp(−m_t)) + ε),   q̂_t = q_t / sqrt(d_qk)

(the true memory is e^{m_t} C_t; the stabiliser cancels in h_t except through the floor exp(−m_t)).
Then a per-head LayerNorm, the output gate σ(õ_t) and the out-projection. The reference path steps
through positions; the fused path computes m with a chunked max-plus scan, then either C and n with
the chunked linear scan (when they are hooked) or h chunk by chunk in the parallel (matrix) form.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import (
    AdapterMixer,
    AdapterMlpBlock,
    HookedTransformersLM,
    SoftCappedHead,
)
from workbench.kernels import linear_scan
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import Emit, State, run_recurrence
from workbench.models.specs import BP_HEADS, RESID, HookSpec

CHUNK = 64  # positions per chunk of the fused path: the within-chunk cumulative log-forget stays small
STATE_QUANTITIES = ("m", "C", "n")


def soft_cap(x: Tensor, cap: float | None) -> Tensor:
    """cap · tanh(x / cap), or x when there is no cap."""
    return x if cap is None else cap * torch.tanh(x / cap)


def mlstm_step(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: State, eps: float,
               emit: Emit) -> State:
    """One stabilised mLSTM step per head: q, k [batch, H, d_qk], v [batch, H, d_v], i, f [batch, H]."""
    log_f = F.logsigmoid(f)
    m = emit("m", torch.maximum(log_f + state["m"], i))  # [batch, H]
    f_act = torch.exp(log_f + state["m"] - m)[..., None]  # [batch, H, 1]
    i_act = torch.exp(i - m)[..., None]
    C = emit("C", f_act[..., None] * state["C"] + i_act[..., None] * (k[..., :, None] @ v[..., None, :]))
    n = emit("n", f_act * state["n"] + i_act * k)  # [batch, H, d_qk]
    q = q * q.shape[-1] ** -0.5
    numerator = (q[..., None, :] @ C).squeeze(-2)  # [batch, H, d_v]
    qn = (q[..., None, :] @ n[..., :, None]).squeeze(-1)  # [batch, H, 1]
    denominator = torch.maximum(qn.abs(), torch.exp(-m)[..., None]) + eps
    emit("h", numerator / denominator)
    return {"m": m, "C": C, "n": n}


def wide(x: Tensor) -> Tensor:
    """x in float64 when it is a narrower float: cumulative log-gates and their differences lose
    digits in float32 (a stabiliser off by 1e-5 shifts every readout in the exp(−m) floor regime)."""
    return x.to(torch.float64) if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else x


def stabiliser_scan(i: Tensor, f: Tensor, m0: Tensor) -> Tensor:
    """m_t = max(log σ(f_t) + m_{t−1}, i_t) for all t, chunk by chunk: i, f [batch, pos, H], m0 [batch, H].

    Within a chunk, with B_t = Σ_{s ≤ t} log σ(f_s) (from the chunk start), m_t = B_t + max(m_start,
    max_{j ≤ t} (i_j − B_j)): a cumulative maximum, no step loop. Returned in float64 for float32 inputs.
    """
    parts, m = [], wide(m0)
    for start in range(0, i.shape[1], CHUNK):
        B = F.logsigmoid(wide(f[:, start:start + CHUNK])).cumsum(1)  # [batch, chunk, H]
        best = torch.cummax(wide(i[:, start:start + CHUNK]) - B, dim=1).values
        chunk = B + torch.maximum(best, m[:, None])
        parts.append(chunk)
        m = chunk[:, -1]
    return torch.cat(parts, dim=1)  # [batch, pos, H]


def mlstm_states_scan(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, m: Tensor, state: State,
                      eps: float) -> dict[str, Tensor]:
    """Every C_t, n_t with the chunked linear scan given the stabiliser m, then h_t: all [batch, pos, ...]."""
    m_before = torch.cat([wide(state["m"])[:, None], m[:, :-1]], dim=1)  # [batch, pos, H]
    f_act = torch.exp(F.logsigmoid(wide(f)) + m_before - m).to(q.dtype)[..., None]  # [batch, pos, H, 1]
    i_act = torch.exp(wide(i) - m).to(q.dtype)[..., None]
    m = m.to(q.dtype)
    C = linear_scan(f_act[..., None], i_act[..., None] * (k[..., :, None] * v[..., None, :]), state["C"])
    n = linear_scan(f_act, i_act * k, state["n"])  # [batch, pos, H, d_qk]
    q = q * q.shape[-1] ** -0.5
    numerator = (q[..., None, :] @ C).squeeze(-2)  # [batch, pos, H, d_v]
    qn = (q * n).sum(-1, keepdim=True)  # [batch, pos, H, 1]
    h = numerator / (torch.maximum(qn.abs(), torch.exp(-m)[..., None]) + eps)
    return {"m": m, "C": C, "n": n, "h": h}


def mlstm_chunkwise(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, m: Tensor, state: State,
                    eps: float) -> tuple[Tensor, State]:
    """h_t for all t in the parallel form inside chunks, C and n carried across chunk boundaries only.

    For t in a chunk starting after state (C, n, m_s): with D_tj = exp(B_t − B_j + ĩ_j − m_t) (j ≤ t) and
    g_t = exp(B_t + m_s − m_t), numerator = g_t C_sᵀ q̂_t + Σ_j D_tj (q̂_t · k_j) v_j, likewise for n.
    Every exponent is ≤ 0 by the definition of m. Returns h [batch, pos, H, d_v] and the final state.
    """
    scale = q.shape[-1] ** -0.5
    C, n, m_start = state["C"], state["n"], state["m"]
    hs = []
    for start in range(0, q.shape[1], CHUNK):
        sl = slice(start, start + CHUNK)
        # per head: [batch, H, chunk, ·]
        qc, kc, vc = (x[:, sl].transpose(1, 2) for x in (q, k, v))
        ic, mc = wide(i[:, sl].transpose(1, 2)), m[:, sl].transpose(1, 2)  # [batch, H, chunk], m wide
        B = F.logsigmoid(wide(f[:, sl].transpose(1, 2))).cumsum(-1)
        length = B.shape[-1]
        causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        log_D = B[..., :, None] - B[..., None, :] + ic[..., None, :] - mc[..., :, None]  # [batch, H, t, j]
        D = torch.exp(log_D.masked_fill(~causal, float("-inf"))).to(q.dtype)
        g = torch.exp(B + wide(m_start)[..., None] - mc).to(q.dtype)[..., None]  # [batch, H, chunk, 1]
        floor = torch.exp(-mc).to(q.dtype)[..., None]
        qs = qc * scale
        weights = (qs @ kc.transpose(-1, -2)) * D  # [batch, H, t, j]
        numerator = g * (qs @ C) + weights @ vc  # [batch, H, chunk, d_v]
        qn = g * (qs @ n[..., None]) + weights.sum(-1, keepdim=True)  # [batch, H, chunk, 1]
        hs.append(numerator / (torch.maximum(qn.abs(), floor) + eps))
        last = D[..., -1, :, None]  # [batch, H, j, 1]: weights of every key in the chunk's final state
        C = g[..., -1, :, None] * C + (kc * last).transpose(-1, -2) @ vc
        n = g[..., -1, :] * n + (kc * last).sum(-2)
        m_start = mc[..., -1]
    h = torch.cat(hs, dim=2).transpose(1, 2)  # [batch, pos, H, d_v]
    return h, {"m": m_start.to(q.dtype), "C": C, "n": n}


class HookedMlstm(AdapterMixer):
    """`transformers` xLSTMLayer (mLSTM) recomputed with gates, stabiliser, memory and readout hooked per head."""

    quantities = ("q", "k", "v", "i", "f", "m", "C", "n", "h", "normed", "o", "out")
    state_names = STATE_QUANTITIES

    def __init__(self, hf_layer: nn.Module, sizes: Mapping[str, int], gate_cap: float | None, eps: float):
        super().__init__(sizes)
        self.hf = hf_layer  # shares the q, k, v, gate projections, multihead_norm, out_proj
        self.gate_cap = gate_cap
        self.eps = eps

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "q": (("batch", "pos", "n_heads", "d_qk"), "query q_t per head"),
            "k": (("batch", "pos", "n_heads", "d_qk"), "key k_t per head"),
            "v": (("batch", "pos", "n_heads", "d_v"), "value v_t per head"),
            "i": (BP_HEADS, "input gate pre-activation ĩ_t (soft-capped); the gate is exp(ĩ_t)"),
            "f": (BP_HEADS, "forget gate pre-activation f̃_t (soft-capped); the gate is σ(f̃_t)"),
            "m": (BP_HEADS, "stabiliser m_t = max(log σ(f̃_t) + m_{t−1}, ĩ_t)"),
            "C": (("batch", "pos", "n_heads", "d_qk", "d_v"), "matrix memory C_t (stabilised: true C = e^{m_t} C_t)"),
            "n": (("batch", "pos", "n_heads", "d_qk"), "normaliser n_t (stabilised like C)"),
            "h": (("batch", "pos", "n_heads", "d_v"), "readout h̃_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, e^{−m_t}) + ε)"),
            "normed": (("batch", "pos", "d_v_total"), "per-head LayerNorm of h̃_t"),
            "o": (("batch", "pos", "d_v_total"), "output gate o_t = σ(õ_t)"),
            "out": (RESID, "layer output W_out (o_t ⊙ normed_t)"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {
            "m": (("batch", "n_heads"), "initial stabiliser m_{-1}"),
            "C": (("batch", "n_heads", "d_qk", "d_v"), "initial matrix memory C_{-1}"),
            "n": (("batch", "n_heads", "d_qk"), "initial normaliser n_{-1}"),
        }

    def _projections(self, x: Tensor) -> dict[str, Tensor]:
        """q, k, v, õ and the soft-capped ĩ, f̃ from either of the library's weight layouts."""
        hf, H = self.hf, self.sizes["n_heads"]
        if hasattr(hf, "q"):  # weight_mode "single"
            out = {"q": hf.q(x), "k": hf.k(x), "v": hf.v(x), "o": hf.ogate_preact(x),
                   "i": hf.igate_preact(x), "f": hf.fgate_preact(x)}
        else:  # weight_mode "fused": matmuls over weight slices, so hooks may edit each in place
            qk, vd = self.sizes["d_qk"] * H, self.sizes["d_v_total"]
            split = [qk, qk, vd, vd]
            w, b = hf.qkv_opreact.weight.split(split), hf.qkv_opreact.bias
            b = (None,) * 4 if b is None else b.split(split)
            out = {name: F.linear(x, wi, bi) for name, wi, bi in zip("qkvo", w, b, strict=True)}
            wg, bg = hf.ifgate_preact.weight.split(H), hf.ifgate_preact.bias.split(H)
            out["i"], out["f"] = F.linear(x, wg[0], bg[0]), F.linear(x, wg[1], bg[1])
        out["i"], out["f"] = soft_cap(out["i"], self.gate_cap), soft_cap(out["f"], self.gate_cap)
        return out

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        return mlstm_step(inputs["q"], inputs["k"], inputs["v"], inputs["i"], inputs["f"], state, self.eps, emit)

    @staticmethod
    def _state_at(values: Mapping[str, Tensor], t: int) -> State:
        return {name: values[name][:, t] for name in STATE_QUANTITIES}

    def mix(self, x: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        batch, pos = x.shape[:2]
        H = self.sizes["n_heads"]
        proj = self._projections(x)
        q = self.hook_q(proj["q"].view(batch, pos, H, -1))  # [batch, pos, H, d_qk]
        k = self.hook_k(proj["k"].view(batch, pos, H, -1))
        v = self.hook_v(proj["v"].view(batch, pos, H, -1))  # [batch, pos, H, d_v]
        i, f = self.hook_i(proj["i"]), self.hook_f(proj["f"])  # [batch, pos, H]
        inputs = {"q": q, "k": k, "v": v, "i": i, "f": f}
        recurrent = {name: state[name] for name in STATE_QUANTITIES}

        def parallel(wanted: set[str], start: int = 0, stop: int = pos, before: State = recurrent,
                     ) -> tuple[dict[str, Tensor], State]:
            q_, k_, v_, i_, f_ = (t[:, start:stop] for t in (q, k, v, i, f))  # the positions [start, stop)
            m = stabiliser_scan(i_, f_, before["m"])  # [batch, stop - start, H]
            if wanted & {"C", "n"}:
                self.last_kernel = "max-plus scan for m + chunked linear scan for C, n (workbench.kernels)"
                values = mlstm_states_scan(q_, k_, v_, i_, f_, m, before, self.eps)
                return values, self._state_at(values, stop - start - 1)
            self.last_kernel = "max-plus scan for m + chunkwise parallel form"
            h, final = mlstm_chunkwise(q_, k_, v_, i_, f_, m, before, self.eps)
            return {"m": m.to(q.dtype), "h": h}, final

        values, final = run_recurrence(
            self._step, inputs, recurrent, self.hook_points(("m", "C", "n", "h")), self._state_at,
            STATE_QUANTITIES, needed=("h",), first_pass=parallel if fused else None,
            segment_pass=parallel if fused else None,
        )
        normed = self.hook_normed(self.hf.multihead_norm(values["h"]))  # [batch, pos, d_v_total]
        o = self.hook_o(torch.sigmoid(proj["o"]))
        return self.hook_out(self.hf.out_proj(o * normed)), final


class HookedSwiGluMlp(nn.Module):
    """`transformers` xLSTMFeedForward: W_down(SiLU(W_gate x) ⊙ W_up x), hidden quantities hooked."""

    def __init__(self, hf_ffn: nn.Module, d_mlp: int):
        super().__init__()
        self.hf = hf_ffn
        self.d_mlp = d_mlp
        self.hook_pre = ScopedHookPoint()
        self.hook_post = ScopedHookPoint()

    def forward(self, x: Tensor) -> Tensor:
        hf = self.hf
        if hasattr(hf, "proj_up_gate"):  # weight_mode "single"
            gate, up = hf.proj_up_gate(x), hf.proj_up(x)
        else:
            w, b = hf.proj_up_gate_z.weight.split(self.d_mlp), hf.proj_up_gate_z.bias
            b = (None, None) if b is None else b.split(self.d_mlp)
            gate, up = F.linear(x, w[0], b[0]), F.linear(x, w[1], b[1])
        gate = self.hook_pre(hf.act_fn(gate))  # [batch, pos, d_mlp]
        return hf.proj_down(self.hook_post(gate * up))  # [batch, pos, d_model]


class HookedXlstmBlock(AdapterMlpBlock):
    """resid_mid = resid_pre + mLSTM(ln1(resid_pre)); resid_post = resid_mid + FFN(ln2(resid_mid))."""

    def __init__(self, hf_block: nn.Module, mixer: HookedMlstm, d_mlp: int):
        super().__init__(hf_block.norm_mlstm, mixer, hf_block.norm_ffn, HookedSwiGluMlp(hf_block.ffn, d_mlp))

    def extra_hook_specs(self) -> dict[str, HookSpec]:
        return {
            "hook_resid_mid": (RESID, "residual after the mLSTM layer"),
            "ln2.hook_normalized": (RESID, "normalised input to the feed-forward"),
            "mlp.hook_pre": (("batch", "pos", "d_mlp"), "feed-forward gate SiLU(W_gate x)"),
            "mlp.hook_post": (("batch", "pos", "d_mlp"), "feed-forward hidden SiLU(W_gate x) ⊙ W_up x"),
            "hook_mlp_out": (RESID, "feed-forward output added to the residual"),
        }


class HookedXlstm(HookedTransformersLM):
    """xLSTMForCausalLM (mLSTM blocks) under the hook contract (Beck et al. 2024)."""

    family = "xlstm"
    padding_refusal = "xLSTMForCausalLM has no attention mask (padding enters the recurrent state)"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.backbone
        layer = backbone.blocks[0].mlstm_layer
        H = cfg.num_heads
        d_mlp = backbone.blocks[0].ffn.up_proj_dim
        sizes = {
            "d_model": cfg.hidden_size, "n_heads": H, "d_qk": layer.qk_dim // H, "d_v": layer.v_dim // H,
            "d_v_total": layer.v_dim, "d_inner": layer.v_dim, "d_mlp": d_mlp, "d_vocab": cfg.vocab_size,
        }
        blocks = [HookedXlstmBlock(block, HookedMlstm(block.mlstm_layer, sizes, cfg.gate_soft_cap, cfg.eps), d_mlp)
                  for block in backbone.blocks]
        super().__init__(hf_model, sizes, blocks, ln_final=backbone.out_norm, embed=backbone.embeddings,
                         unembed=SoftCappedHead(hf_model.lm_head, cfg.output_logit_soft_cap), path=path)
        self.setup()

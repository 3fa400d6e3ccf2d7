"""The classic nonlinear recurrences: Elman RNN, LSTM and GRU, one readable step each.

The reference path runs `_step` position by position. The fused path runs the kernel
`workbench.kernels.dispatch.fastest_rnn_recording` picks: a gate-writing loop (compiled C++, or
Python on wide CPU steps) when no gradient is needed, else PyTorch's own kernel (torch.nn.RNN /
LSTM / GRU, cuDNN or oneDNN) with every gate recovered afterwards in parallel from h.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from workbench.kernels.dispatch import RNNFamily, fastest_rnn_recording
from workbench.kernels.lstm_adjoint import LSTM_QUANTITIES, lstm_with_adjoint
from workbench.models.config import RecurrentConfig
from workbench.models.mixers.base import Mixer
from workbench.models.recurrence import (
    Adjoint,
    Emit,
    FirstPassFn,
    LazyInputs,
    SegmentPassFn,
    State,
    run_recurrence,
)
from workbench.models.specs import B_HIDDEN, BP_HIDDEN, RESID, HookSpec


@contextlib.contextmanager
def recording_precision(device: torch.device) -> Iterator[None]:
    """Turn TF32 off on CUDA while recording, so recovered gates match the recurrence (DESIGN)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class _LibraryRecurrence(Mixer):
    """Shared frame: a single-layer torch.nn recurrent module holds the weights, a Linear maps out."""

    recurrent: tuple[str, ...] = ()
    library_class: type[nn.RNNBase] = nn.RNN
    family: RNNFamily = "elman"  # which kernels `fastest_rnn_recording` picks among

    def __init__(self, cfg: RecurrentConfig):
        super().__init__(cfg)
        self.cell = self.library_class(cfg.d_model, cfg.d_hidden, batch_first=True)
        self.W_out = nn.Linear(cfg.d_hidden, cfg.d_model)

    @property
    def weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cell = self.cell
        return cell.weight_ih_l0, cell.weight_hh_l0, cell.bias_ih_l0, cell.bias_hh_l0

    def input_projection(self, x: Tensor) -> Tensor:
        """W_ih x_t + b_ih for every position at once: [batch, pos, gates * d_hidden]."""
        weight_ih, _, bias_ih, _ = self.weights
        return x @ weight_ih.T + bias_ih

    def state_at(self, values: Mapping[str, Tensor], t: int) -> State:
        return {name: values[name][:, t] for name in self.state_names}

    def finish(self, values: dict[str, Tensor], final: State) -> tuple[Tensor, State]:
        out = self.hook_out(self.W_out(values["h"]))  # [batch, pos, d_model]
        return out, final

    def run(
        self, x: Tensor, state: State, first_pass: FirstPassFn | None, segment_pass: SegmentPassFn | None = None
    ) -> tuple[Tensor, State]:
        values, final = run_recurrence(
            self._step,
            # built only if a step loop runs (reference path, or a replay after an edit): the fused
            # kernels project x themselves
            LazyInputs({"x_proj": lambda: self.input_projection(x)}, x.shape[1],
                       at={"x_proj": lambda t: self.input_projection(x[:, t])}),  # [batch, gates * d_hidden]
            state,
            self.hook_points(self.recurrent),
            self.state_at,
            self.state_names,
            needed=("h",),
            first_pass=first_pass,
            segment_pass=segment_pass,
            adjoint=self.adjoint(),
        )
        return self.finish(values, final)

    def adjoint(self) -> Adjoint | None:
        """The written-out backward of the recurrence for `incl_bwd`, if the family has one."""
        return None

    def forward_reference(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self.run(x, state, first_pass=None)

    def forward_fused(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        def segment_pass(wanted: set[str], start: int, stop: int, before: State) -> tuple[dict[str, Tensor], State]:
            gates = bool(wanted - {"h"})  # any recurrent quantity the library kernel does not return
            parameters = tuple(self.parameters())
            window = x if (start, stop) == (0, x.shape[1]) else x[:, start:stop].contiguous()  # [batch, k, d]
            before = {name: value.contiguous() for name, value in before.items()}
            self.last_kernel, kernel = fastest_rnn_recording(
                self.family, window, before, gates, self.cfg.d_hidden, parameters)
            return kernel(window, before, self.cell)

        def first_pass(wanted: set[str]) -> tuple[dict[str, Tensor], State]:
            return segment_pass(wanted, 0, x.shape[1], state)

        with recording_precision(x.device):
            return self.run(x, state, first_pass, segment_pass)

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        raise NotImplementedError


class ElmanMixer(_LibraryRecurrence):
    """Elman 1990: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

    quantities = ("pre", "h", "out")
    recurrent = ("pre", "h")
    state_names = ("h",)
    library_class = nn.RNN
    family = "elman"

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "pre": (BP_HIDDEN, "pre-activation W_ih x_t + W_hh h_{t-1} + b"),
            "h": (BP_HIDDEN, "hidden state h_t = tanh(pre)"),
            "out": (RESID, "mixer output W_out h_t + b_out"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {"h": (B_HIDDEN, "initial hidden state h_{-1}")}

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        _, weight_hh, _, bias_hh = self.weights
        pre = emit("pre", inputs["x_proj"] + state["h"] @ weight_hh.T + bias_hh)  # [batch, H]
        h = emit("h", torch.tanh(pre))
        return {"h": h}



class LSTMMixer(_LibraryRecurrence):
    """Hochreiter & Schmidhuber 1997 LSTM with forget gate (Gers et al. 2000), PyTorch gate order."""

    quantities = ("i", "f", "g", "o", "c", "h", "out")
    recurrent = ("i", "f", "g", "o", "c", "h")
    state_names = ("h", "c")
    library_class = nn.LSTM
    family = "lstm"

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "i": (BP_HIDDEN, "input gate i_t = σ(W_i [x_t, h_{t-1}] + b_i)"),
            "f": (BP_HIDDEN, "forget gate f_t = σ(W_f [x_t, h_{t-1}] + b_f)"),
            "g": (BP_HIDDEN, "candidate cell g_t = tanh(W_g [x_t, h_{t-1}] + b_g)"),
            "o": (BP_HIDDEN, "output gate o_t = σ(W_o [x_t, h_{t-1}] + b_o)"),
            "c": (BP_HIDDEN, "cell state c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t"),
            "h": (BP_HIDDEN, "hidden state h_t = o_t ⊙ tanh(c_t)"),
            "out": (RESID, "mixer output W_out h_t + b_out"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {"h": (B_HIDDEN, "initial hidden state h_{-1}"), "c": (B_HIDDEN, "initial cell state c_{-1}")}

    def adjoint(self) -> Adjoint:
        _, weight_hh, _, bias_hh = self.weights

        def run(values: Mapping[str, Tensor], inputs: Mapping[str, Tensor], state: State,
                probes: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], State]:
            h, final = lstm_with_adjoint(values, inputs["x_proj"], state, weight_hh, bias_hh, probes)
            return {"h": h}, final

        return Adjoint(LSTM_QUANTITIES, ("h",), run, "LSTM adjoint recursion over the first pass (lstm_adjoint)")

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        _, weight_hh, _, bias_hh = self.weights
        pre = inputs["x_proj"] + state["h"] @ weight_hh.T + bias_hh  # [batch, 4 H]
        i_pre, f_pre, g_pre, o_pre = pre.chunk(4, dim=-1)
        i = emit("i", torch.sigmoid(i_pre))
        f = emit("f", torch.sigmoid(f_pre))
        g = emit("g", torch.tanh(g_pre))
        o = emit("o", torch.sigmoid(o_pre))
        c = emit("c", f * state["c"] + i * g)
        h = emit("h", o * torch.tanh(c))
        return {"h": h, "c": c}



class GRUMixer(_LibraryRecurrence):
    """Cho et al. 2014 GRU in PyTorch's convention: h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}."""

    quantities = ("r", "z", "n", "h", "out")
    recurrent = ("r", "z", "n", "h")
    state_names = ("h",)
    library_class = nn.GRU
    family = "gru"

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "r": (BP_HIDDEN, "reset gate r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)"),
            "z": (BP_HIDDEN, "update gate z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)"),
            "n": (BP_HIDDEN, "candidate n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))"),
            "h": (BP_HIDDEN, "hidden state h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}"),
            "out": (RESID, "mixer output W_out h_t + b_out"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {"h": (B_HIDDEN, "initial hidden state h_{-1}")}

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        _, weight_hh, _, bias_hh = self.weights
        x_r, x_z, x_n = inputs["x_proj"].chunk(3, dim=-1)  # [batch, H] each
        h_r, h_z, h_n = (state["h"] @ weight_hh.T + bias_hh).chunk(3, dim=-1)
        r = emit("r", torch.sigmoid(x_r + h_r))
        z = emit("z", torch.sigmoid(x_z + h_z))
        n = emit("n", torch.tanh(x_n + r * h_n))
        h = emit("h", (1 - z) * n + z * state["h"])
        return {"h": h}


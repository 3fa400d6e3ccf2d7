"""The paper's plain RNN, h_t = f(W h_{t-1} + U x_t + b), y_t = V h_t + c (Michaud et al. 2024, Eq. 1), hooked.

Why not `workbench.models.HookedRecurrentSeq2Seq`: its block is residual (resid = W_in x + mixer(x),
y = W_out resid), so the output sees the current input directly and the state is not the whole
memory. MIPS reads the finite state machine off the hidden state alone and reparametrises W, U, V
exactly (Krylov/Jordan bases, integer snapping), which needs the plain recurrence with an explicit
W. So this module is the paper's RNN, written as a TransformerLens `HookedRootModule` with
`hook_x`, `hook_pre`, `hook_h` (and `hook_r`, `hook_z`, `hook_n` for the GRU) and `hook_y`, all
`[batch, pos, ...]`, so `run_with_cache` / `run_with_hooks` work as everywhere else in the workbench.
The recurrence runs through `workbench.models.recurrence.run_recurrence`, so an edit to `hook_h` (or
a gate) at position t changes every later state and output and no earlier one, as everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from workbench.analysis.mips.tasks import Task
from workbench.models.recurrence import Emit, run_recurrence
from workbench.models.transformer_lens_compat import HookedRootModule, HookPoint

__all__ = ["D_MLP", "FAMILIES", "MipsRNN", "RNNSpec", "encode_inputs"]

FAMILIES = ("linear", "tanh", "gru", "lstm")
D_MLP = 32  # width of an MLP readout's hidden layers


@dataclass(frozen=True)
class RNNSpec:
    """One architecture in the smallest-first search (Michaud et al. 2024, Sec. 3.1)."""

    family: str = "linear"  # linear | tanh (Elman) | gru | lstm: the recurrence f
    d_hidden: int = 2
    readout: str = "linear"  # linear: y = V h + c; mlp: y = MLP(h) (the state stays linear)
    encoding: str = "scalar"  # scalar: x itself; onehot: one indicator per symbol and channel
    loss: str = "mse"  # mse on rounded outputs (the paper) | ce over the output symbols
    seed: int = 0
    bias: bool = True  # a linear net without b has integer Krylov coordinates (see lattice.py)

    def label(self) -> str:
        """Short name, e.g. `linear-2/mlp/onehot s0`."""
        bias = "" if self.bias else "/nobias"
        return f"{self.family}-{self.d_hidden}/{self.readout}/{self.encoding}/{self.loss}{bias} s{self.seed}"

    def as_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def encode_inputs(task: Task, x: np.ndarray, encoding: str) -> torch.Tensor:
    """Integer inputs `[batch, pos, n_inputs]` -> float features `[batch, pos, d_input]` (unscaled)."""
    x = np.asarray(x)
    if encoding == "scalar":
        return torch.as_tensor(x, dtype=torch.float64)
    if encoding == "onehot":
        alpha = np.asarray(task.alphabet)
        idx = np.searchsorted(alpha, x)  # [b, p, c]
        eye = np.eye(len(alpha))
        return torch.as_tensor(eye[idx].reshape(*x.shape[:2], -1), dtype=torch.float64)
    raise ValueError(f"unknown input encoding {encoding!r}; use 'scalar' or 'onehot'")


class MipsRNN(HookedRootModule):
    """Plain (Elman / linear), GRU or LSTM recurrence with a linear or MLP readout, hooked; float64 throughout.

    The LSTM's whole state is the packed vector [h, c] (`hook_h` carries it, `[batch, pos, 2 d]`), so
    state readers (clustering, FSM extraction) see the full memory; the readout reads the h half.
    """

    def __init__(
        self,
        d_input: int,
        d_output: int,
        spec: RNNSpec,
        x_scale: np.ndarray | None = None,
        y_scale: float = 1.0,
        d_mlp: int = D_MLP,
    ):
        super().__init__()
        if spec.family not in FAMILIES:
            raise ValueError(f"unknown RNN family {spec.family!r}; choose from {FAMILIES}")
        torch.manual_seed(spec.seed)
        self.spec, self.d_input, self.d_output, d = spec, d_input, d_output, spec.d_hidden
        self.register_buffer(
            "x_scale", torch.as_tensor(np.ones(d_input) if x_scale is None else x_scale, dtype=torch.float64)
        )  # [d_in]
        self.register_buffer("y_scale", torch.tensor(float(y_scale), dtype=torch.float64))
        n_gates = {"gru": 3, "lstm": 4}.get(spec.family, 1)
        self.W = nn.Parameter(torch.randn(n_gates * d, d, dtype=torch.float64) / d**0.5)  # [g*d, d]
        self.U = nn.Parameter(torch.randn(n_gates * d, d_input, dtype=torch.float64) / d_input**0.5)
        self.b = nn.Parameter(torch.zeros(n_gates * d, dtype=torch.float64), requires_grad=spec.bias)
        if spec.family == "linear":
            with torch.no_grad():
                self.W.mul_(0.5)
        if spec.readout == "linear":
            self.readout = nn.Linear(d, d_output, dtype=torch.float64)
        else:
            self.readout = nn.Sequential(
                nn.Linear(d, d_mlp, dtype=torch.float64),
                nn.ReLU(),
                nn.Linear(d_mlp, d_mlp, dtype=torch.float64),
                nn.ReLU(),
                nn.Linear(d_mlp, d_output, dtype=torch.float64),
            )
        self.hook_x, self.hook_pre, self.hook_h, self.hook_y = (
            HookPoint(),
            HookPoint(),
            HookPoint(),
            HookPoint(),
        )
        if spec.family == "gru":
            self.hook_r, self.hook_z, self.hook_n = HookPoint(), HookPoint(), HookPoint()
        if spec.family == "lstm":
            self.hook_i, self.hook_f, self.hook_o, self.hook_g = HookPoint(), HookPoint(), HookPoint(), HookPoint()
            with torch.no_grad():
                self.b[d : 2 * d] = 1.0  # forget-gate bias 1 (Gers et al. 2000): remember by default
        self.setup()

    @property
    def state_size(self) -> int:
        """Width of the recurrent state: d_hidden, or 2 d_hidden for the LSTM's [h, c]."""
        return 2 * self.spec.d_hidden if self.spec.family == "lstm" else self.spec.d_hidden

    def read(self, state: torch.Tensor) -> torch.Tensor:
        """Outputs (target units, or logits) from states `[..., state_size]`: the readout of h."""
        h = state[..., : self.spec.d_hidden] if self.spec.family == "lstm" else state
        return self.readout(h) * self.y_scale

    def recurrent_quantities(self) -> tuple[str, ...]:
        """Hooked quantities computed inside the recurrence, in step order."""
        if self.spec.family == "gru":
            return ("r", "z", "pre", "n", "h")
        if self.spec.family == "lstm":
            return ("i", "f", "o", "g", "h")
        return ("pre", "h")

    def _step(self, inputs: Mapping[str, torch.Tensor], state: dict[str, torch.Tensor], emit: Emit) -> dict:
        """One step from state h [batch, d] and scaled input x [batch, d_in]; `emit` hooks each quantity."""
        d, x, h = self.spec.d_hidden, inputs["x"], state["h"]
        if self.spec.family == "gru":  # Cho et al. 2014
            gx = x @ self.U.T + self.b  # [batch, 3d]
            gh = h @ self.W.T  # [batch, 3d]
            r = emit("r", torch.sigmoid(gx[:, :d] + gh[:, :d]))
            z = emit("z", torch.sigmoid(gx[:, d : 2 * d] + gh[:, d : 2 * d]))
            pre = emit("pre", gx[:, 2 * d :] + r * gh[:, 2 * d :])
            n = emit("n", torch.tanh(pre))
            return {"h": emit("h", (1 - z) * n + z * h)}
        if self.spec.family == "lstm":  # Hochreiter & Schmidhuber 1997, with a forget gate
            hh, cc = h[:, :d], h[:, d:]
            gates = x @ self.U.T + hh @ self.W.T + self.b  # [batch, 4d]
            i = emit("i", torch.sigmoid(gates[:, :d]))
            f = emit("f", torch.sigmoid(gates[:, d : 2 * d]))
            o = emit("o", torch.sigmoid(gates[:, 2 * d : 3 * d]))
            g = emit("g", torch.tanh(gates[:, 3 * d :]))
            c_new = f * cc + i * g
            return {"h": emit("h", torch.cat([o * torch.tanh(c_new), c_new], -1))}
        pre = emit("pre", h @ self.W.T + x @ self.U.T + self.b)  # [batch, d]
        return {"h": emit("h", pre if self.spec.family == "linear" else torch.tanh(pre))}

    def step(self, h: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One unhooked step: every quantity at the next position, from h [batch, d] and x [batch, d_in]."""
        values: dict[str, torch.Tensor] = {}

        def keep(name: str, value: torch.Tensor) -> torch.Tensor:
            values[name] = value
            return value

        self._step({"x": x}, {"h": h}, keep)
        return values

    def forward(self, x: torch.Tensor, initial_state: torch.Tensor | None = None) -> torch.Tensor:
        """Features `[batch, pos, d_input]` -> outputs `[batch, pos, d_output]` (target units, or logits).

        The recurrence runs through the workbench's `run_recurrence`, so a hook that edits `hook_h`
        (or a gate) at position t changes every later state and output, and no earlier one.
        """
        x = self.hook_x(x.to(torch.float64) / self.x_scale)  # [b, p, d_in]
        h0 = x.new_zeros(x.shape[0], self.state_size) if initial_state is None else initial_state
        names = self.recurrent_quantities()
        values, _ = run_recurrence(
            self._step, {"x": x}, {"h": h0}, {q: getattr(self, f"hook_{q}") for q in names},
            lambda v, t: {"h": v["h"][:, t]}, ("h",), needed=("h",),
        )
        return self.hook_y(self.read(values["h"]))  # [b, p, d_out]

    def hidden_states(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states `[batch, pos, state_size]` for features `x` (no grad)."""
        with torch.no_grad():
            _, cache = self.run_with_cache(x, names_filter="hook_h")
        return cache["hook_h"]

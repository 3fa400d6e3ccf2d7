"""A small LSTM with hand-set weights whose cells provably track known features.

Ground truth for cell discovery: the cells Karpathy, Johnson & Fei-Fei 2015 found in trained
models (Fig. 2: quote, bracket and line-position cells), built by hand so a test or a notebook
can check that `discover_cells` recovers them. Every other unit keeps its random initial weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from workbench.analysis.planted.base import planted_lm

if TYPE_CHECKING:
    from workbench.models import HookedRecurrentLM

__all__ = ["PLANTED_CELLS", "planted_lstm"]

# feature name -> unit of layer 0 that tracks it in the cell state c
PLANTED_CELLS: dict[str, int] = {"bracket_depth": 0, "in_string": 1, "position_in_line": 2}

# Embedding directions the planted cells read (the rest of the embedding is random).
_BRACKET, _QUOTE, _NEWLINE, _ONE = 0, 1, 2, 3


@torch.no_grad()
def planted_lstm(
    tokenizer: Any = None,
    *,
    d_model: int = 16,
    d_hidden: int = 16,
    n_layers: int = 1,
    strength: float = 20.0,
    step: float = 0.1,
    seed: int = 0,
) -> HookedRecurrentLM:
    """An LSTM language model (no norms) whose layer-0 cell state has three planted cells.

    With B = `strength`, i_t = σ(±B), f_t = σ(±B) are saturated, so c_t = f_t c_{t-1} + i_t g_t:
    - unit 0 counts bracket depth: f = 1, g = tanh(B·(+1 on ( [ {, −1 on ) ] }, 0 else)),
      i = σ(B (1 − 2.5 h¹_{t−1})) = 1 except inside a string (unit 1's h¹ ≈ +0.76), so brackets
      in strings do not count;
    - unit 1 toggles inside `"`: on a quote f = 0, i = 1, g = tanh(−B (h_{t−1} − 0.3)), so c flips
      between +1 (inside) and −1 (outside); elsewhere f = 1, i = 0 and c holds;
    - unit 2 counts position in line: g = tanh(`step`) per character, f = 0 at a newline.
    Which unit tracks what is in `PLANTED_CELLS` and `model.cfg.metadata["planted_cells"]`.
    """
    if d_model < 4 or d_hidden < 3:
        raise ValueError("a planted LSTM needs d_model >= 4 and d_hidden >= 3")
    model = planted_lm(tokenizer, seed, family="lstm", n_layers=n_layers, d_model=d_model, d_hidden=d_hidden,
                       norm="none", metadata={"planted_cells": dict(PLANTED_CELLS)})
    tok = model.tokenizer
    emb = model.embed.weight  # [d_vocab, d_model]
    emb[:, :4] = 0.0
    emb[:, _ONE] = 1.0
    for ch, sign in [*((c, 1.0) for c in "([{"), *((c, -1.0) for c in ")]}")]:
        if ch in tok.stoi:
            emb[tok.stoi[ch], _BRACKET] = sign
    if '"' in tok.stoi:
        emb[tok.stoi['"'], _QUOTE] = 1.0
    if "\n" in tok.stoi:
        emb[tok.stoi["\n"], _NEWLINE] = 1.0

    cell = model.blocks[0].mixer.cell
    w_ih, w_hh = cell.weight_ih_l0, cell.weight_hh_l0  # [4H, d_model], [4H, H]; rows i, f, g, o
    b_ih, b_hh = cell.bias_ih_l0, cell.bias_hh_l0  # [4H]
    H, B = d_hidden, strength

    def rows(unit: int) -> list[int]:  # the i, f, g, o rows of one unit
        return [gate * H + unit for gate in range(4)]

    for unit in PLANTED_CELLS.values():
        w_ih[rows(unit)] = 0.0
        w_hh[rows(unit)] = 0.0
        b_ih[rows(unit)] = 0.0
        b_hh[rows(unit)] = 0.0
        w_ih[3 * H + unit, _ONE] = B  # o = 1: h = tanh(c)
    i, f, g, _ = rows(0)  # bracket depth, outside strings: the quote cell's h shuts the input gate
    w_ih[i, _ONE] = w_ih[f, _ONE] = B
    w_hh[i, 1] = -2.5 * B
    w_ih[g, _BRACKET] = B
    i, f, g, _ = rows(1)  # inside quotes
    w_ih[i, _QUOTE], w_ih[i, _ONE] = 2 * B, -B
    w_ih[f, _QUOTE], w_ih[f, _ONE] = -2 * B, B
    w_hh[g, 1] = -B
    b_hh[g] = 0.3 * B
    i, f, g, _ = rows(2)  # position in line
    w_ih[i, _ONE] = B
    w_ih[f, _ONE], w_ih[f, _NEWLINE] = B, -2 * B
    w_ih[g, _ONE], w_ih[g, _NEWLINE] = step, -step
    # random units read no planted direction, so they cannot mimic a planted cell by accident
    others = [r for u in range(H) if u not in PLANTED_CELLS.values() for r in rows(u)]
    w_ih[others, :4] = 0.0
    return model

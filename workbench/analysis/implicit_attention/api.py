"""`implicit_attention(model, tokens, layer=...)`: one API over every gated-linear family.

Zimerman, Ali & Wolf 2024 (*A Unified Implicit Attention Formulation for Gated-Linear Recurrent
Sequence Models*) and Ali, Zimerman & Wolf 2024 (*The Hidden Attention of Mamba Models*) write each
layer as y = Ã v, a causal L×L matrix per channel. Here Ã v + bias reproduces the recorded output
exactly (`ImplicitAttention.max_error`), the memory a request needs is computed before anything
runs, and channels are aggregated on the fly (the papers' mean; |·| mean; the value-weighted norm
of Kobayashi et al. 2020) so an L×L×channels map is never held unless asked for.

A family is a class with `families`, `modes`, `hook_names(layer, mode)`, `form(model, cache, layer,
mode) -> LinearForm` (or a form with the same methods, as RWKV's `WKVForm`) and `output_grad(...)`;
`FAMILIES` maps the config's family to it: our S6, minGRU, minLSTM, LSTM and GRU, and through the
`transformers` adapters Mamba / FalconMamba (the S6 form), Mamba2, RWKV-4, RecurrentGemma
(RG-LRU blocks, and its local-attention blocks as their own patterns), Qwen3-Next (the gated
delta rule, `delta_rule`, and its full-attention layers as their own patterns) and Kimi-Linear (KDA, the
delta rule with a per-channel decay, and its latent-attention layers as their own patterns), OLMo-Hybrid,
the Mamba-2 hybrids (`mamba2_hybrid`), the Mamba-1
hybrids (`hybrid`: S6 layers and attention layers' own patterns) and LFM2 (`short_conv`: the exact
banded map of its gated short convolutions, and its attention layers' own patterns).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from workbench.analysis.implicit_attention.classic import GRU, LSTM
from workbench.analysis.implicit_attention.delta_rule import Qwen3Next
from workbench.analysis.implicit_attention.form import LinearForm, compose_work_bytes
from workbench.analysis.implicit_attention.hybrid import MambaHybrid
from workbench.analysis.implicit_attention.kernel import DEFAULT_CHUNK, decay_attention_work_bytes
from workbench.analysis.implicit_attention.kimi_linear import KimiLinear
from workbench.analysis.implicit_attention.mamba2 import Mamba2
from workbench.analysis.implicit_attention.mamba2_hybrid import Mamba2Hybrid
from workbench.analysis.implicit_attention.minimal import MinGRU, MinLSTM
from workbench.analysis.implicit_attention.olmo_hybrid import OlmoHybrid
from workbench.analysis.implicit_attention.recurrent_gemma import RecurrentGemma
from workbench.analysis.implicit_attention.rwkv import RWKV
from workbench.analysis.implicit_attention.s6 import S6
from workbench.analysis.implicit_attention.short_conv import Lfm2
from workbench.errors import EmptyInputError, MemoryBudgetError, UnknownHookError
from workbench.utils import block_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = [
    "AGGREGATIONS",
    "FAMILIES",
    "ImplicitAttention",
    "attend",
    "attention_bytes",
    "channel_count",
    "family_of",
    "implicit_attention",
    "implicit_attention_layers",
    "implicit_attention_row",
    "layer_forms",
    "to_tokens",
]

FAMILIES: dict[str, Any] = {
    family: module
    for module in (S6, Mamba2, RWKV, RecurrentGemma, MinGRU, MinLSTM, LSTM, GRU, Qwen3Next, KimiLinear,
                   OlmoHybrid, Mamba2Hybrid, MambaHybrid, Lfm2)
    for family in module.families
}
AGGREGATIONS = ("none", "mean", "abs_mean", "norm", "gradient")
WORK_TARGET_BYTES = 256 << 20  # per channel chunk: large enough to vectorise, small enough for cache


@dataclass
class ImplicitAttention:
    """Implicit-attention maps of one layer, with the value, bias and output they reproduce.

    `maps` is [batch, channel, query, key] when `aggregate == "none"` (like TransformerLens's
    `hook_pattern` [batch, head, query, key]), else [batch, query, key]. `value` [batch, channel,
    key], `bias` and `output` [batch, channel, query]: per channel, maps @ value + bias = output.
    """

    maps: Tensor
    value: Tensor
    bias: Tensor
    output: Tensor
    family: str
    layer: int
    mode: str
    aggregate: str
    channels: Tensor  # [channel] indices into the layer's channels
    queries: Tensor  # [query] positions
    value_name: str
    output_name: str

    def reproduce(self) -> Tensor:
        """Ã v + bias, [batch, channel, query] (only for per-channel maps)."""
        if self.aggregate != "none":
            raise ValueError(f"maps aggregated with {self.aggregate!r} cannot reproduce the output; "
                             "compute with aggregate='none' (and channels=... to bound memory)")
        return (self.maps @ self.value[..., None])[..., 0] + self.bias

    def max_error(self) -> float:
        """max |Ã v + bias − recorded output| over batch, channels and queries."""
        return float((self.reproduce() - self.output).abs().max())

    def relative_error(self) -> float:
        """max error divided by max |output|."""
        return self.max_error() / max(float(self.output.abs().max()), 1e-30)


def family_of(model: HookedModel) -> Any:
    """The implicit-attention family class for the model's mixers; unsupported families raise."""
    family = model.cfg.family
    if family not in FAMILIES:
        raise NotImplementedError(
            f"no implicit-attention form for a {family!r} mixer: its state enters its update "
            f"nonlinearly with no gates to hold fixed; supported families: {', '.join(FAMILIES)}"
        )
    return FAMILIES[family]


def channel_count(model: HookedModel) -> int:
    """How many channels the family's maps have (d_hidden, d_inner, RWKV's d_att; the family's own
    `channel_count` where it differs, as Falcon-H1's two parallel branches)."""
    family = family_of(model)
    if hasattr(family, "channel_count"):
        return int(family.channel_count(model))
    sizes = getattr(model, "sizes", None) or {}
    return int(sizes.get(family.channel_name, model.cfg.d_hidden))


def to_tokens(model: HookedModel, tokens: Tensor | str | Sequence[str]) -> Tensor:
    """Text or ids -> ids [batch, pos] on the model's device; empty input raises."""
    if isinstance(tokens, (str, list, tuple)):
        if isinstance(tokens, str) and not tokens:
            raise EmptyInputError("the text is empty: give at least one character")
        return model.to_tokens(tokens)
    tokens = torch.as_tensor(tokens)
    tokens = tokens[None] if tokens.ndim == 1 else tokens
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise EmptyInputError(f"tokens of shape {tuple(tokens.shape)}: give [batch, pos] ids, pos ≥ 1")
    return tokens.to(model.device)


def _check_layer(model: HookedModel, layer: int) -> int:
    n = len(model.blocks)
    if not isinstance(layer, int) or not -n <= layer < n:
        raise UnknownHookError(block_name(layer),
                               message=f"unknown layer {layer!r}: the model has {n} layer(s), 0..{n - 1}")
    return layer % n


def _check_mode(family: Any, mode: str) -> None:
    if mode not in family.modes:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(family.modes)}")


def _check_aggregate(aggregate: str) -> None:
    if aggregate not in AGGREGATIONS:
        close = difflib.get_close_matches(str(aggregate), AGGREGATIONS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown aggregate {aggregate!r}; choose one of {', '.join(AGGREGATIONS)}{hint}")


@torch.no_grad()
def record(model: HookedModel, tokens: Tensor, layers: Sequence[int], mode: str,
           memory_budget_bytes: int | None = None, initial_state: Any = None) -> dict[str, Tensor]:
    """Run once, caching only the hooks the forms of `layers` need (never the S6 state)."""
    family = family_of(model)
    names = [n for layer in layers for n in family.hook_names(layer, mode, model)]
    _, cache = model.run_with_cache(tokens, names_filter=names, memory_budget_bytes=memory_budget_bytes,
                                    initial_state=initial_state)
    return cache


def layer_forms(model: HookedModel, tokens: Tensor | str, layers: Sequence[int] | None = None,
                mode: str = "exact", cache: dict | None = None) -> dict[int, LinearForm]:
    """The `LinearForm` of each layer, from one forward pass."""
    family = family_of(model)
    _check_mode(family, mode)
    tokens = to_tokens(model, tokens)
    layers = list(range(len(model.blocks))) if layers is None else [_check_layer(model, la) for la in layers]
    cache = cache if cache is not None else record(model, tokens, layers, mode)
    return {layer: family.form(model, cache, layer, mode) for layer in layers}


def attention_bytes(batch: int, channels: int, queries: int, pos: int, n: int, element: int,
                    aggregate: str, channel_chunk: int, chunk: int | None = DEFAULT_CHUNK,
                    core_bytes: int | None = None, compose_bytes: int | None = None) -> tuple[int, int]:
    """(bytes the result holds, peak bytes of the work for one chunk of `channel_chunk` channels).

    `core_bytes`: the kernel's own estimate for the chunk (`form.work_bytes`, which counts the chunk's
    map); default the chunked decay kernel's (d_state `n` per channel). `compose_bytes`: what the
    chunk needs besides (`form.compose_bytes`: its operands, compose's temporaries, the bias); default
    `compose_work_bytes` of a form with a conv and an initial state. Then the aggregation's: one
    [batch, query, key] sum over the chunk's channels, and for aggregate='gradient' the chunk's
    gradient rows; the other reductions work in place on the chunk's map. With aggregate='none' in
    one chunk the chunk's map is the result, counted once.
    """
    maps = element * batch * (channels if aggregate == "none" else 1) * queries * pos
    vectors = element * batch * channels * (pos + 2 * queries)
    lead = batch * channel_chunk
    if core_bytes is not None:
        core = core_bytes
    elif queries == pos:
        core = decay_attention_work_bytes(lead, pos, n, element, chunk)
    else:
        core = element * lead * queries * pos * (3 * n + 1)
    if compose_bytes is None:
        compose_bytes = compose_work_bytes(lead, queries, pos, n, element)
    aggregation = 0 if aggregate == "none" else element * batch * queries * pos
    if aggregate == "gradient":
        aggregation += element * lead * (pos + queries)
    # One chunk of per-channel maps: the kernel's map (which `core` counts) is the result itself.
    shared = maps if aggregate == "none" and channel_chunk >= channels else 0
    return maps + vectors, core + compose_bytes + aggregation - shared


def _plan(form: Any, queries: int, aggregate: str, budget: int, chunk: int) -> int:
    """Channels per chunk that fit the budget; refuse with the bytes when even one does not."""
    b, d, L = form.shape
    element = form.value.element_size()

    def need(step: int) -> tuple[int, int]:
        return attention_bytes(b, d, queries, L, form.n, element, aggregate, step, chunk,
                               core_bytes=form.work_bytes(b * step, queries, chunk),
                               compose_bytes=form.compose_bytes(b * step, queries))

    held, work_one = need(1)
    if held + work_one > budget:
        what = (f"implicit attention over {d} channels x {queries} queries x {L} positions "
                f"(batch {b}, aggregate={aggregate!r})")
        raise MemoryBudgetError(
            held + work_one, budget, what=what,
            hint="aggregate over channels (aggregate='mean' or 'norm'), pick channels=[...], "
                 "ask for rows (queries=[t]), shorten the text, or raise memory_budget_bytes",
        )
    room = min(budget - held, max(WORK_TARGET_BYTES, work_one))
    step = max(1, min(d, room // max(work_one, 1)))
    while step > 1 and need(step)[1] > room:
        step -= 1
    return int(step)


def _resolve_channels(channels: int | Sequence[int] | Tensor | None, d: int, name: str) -> Tensor:
    if channels is None:
        return torch.arange(d)
    index = torch.as_tensor([channels] if isinstance(channels, int) else channels, dtype=torch.long)
    if index.numel() == 0:
        raise ValueError("no channels given")
    if int(index.min()) < -d or int(index.max()) >= d:
        raise IndexError(f"channel out of range: the layer has {d} {name} channels, 0..{d - 1}")
    return index % d


def _resolve_queries(queries: int | Sequence[int] | Tensor | None, L: int) -> Tensor | None:
    if queries is None:
        return None
    index = torch.as_tensor([queries] if isinstance(queries, int) else queries, dtype=torch.long)
    if index.numel() == 0:
        raise ValueError("no query positions given")
    if int(index.min()) < -L or int(index.max()) >= L:
        raise IndexError(f"query position out of range for {L} positions")
    return index % L


def attend(form: LinearForm, *, channels: Tensor | None = None, queries: Tensor | None = None,
           aggregate: str = "none", chunk: int | None = DEFAULT_CHUNK,
           memory_budget_bytes: int | None = None,
           query_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(maps, bias) of a form, channel chunk by channel chunk, aggregated on the fly.

    aggregate="gradient" needs `query_weight` g [b, d, L] (∂target/∂output) and gives
    mean_c (g_t Ã_tj v_j)^+, the gradient-weighted map of Ali et al. 2024 (eq. 16).
    """
    from workbench.models.cache import memory_budget

    _check_aggregate(aggregate)
    if (aggregate == "gradient") != (query_weight is not None):
        raise ValueError("aggregate='gradient' goes with query_weight=∂target/∂output, and only it")
    b, d, L = form.shape
    channels = torch.arange(d) if channels is None else channels
    sub = form.channels(channels.to(form.value.device)) if len(channels) != d else form
    q_index = torch.arange(L, device=form.value.device) if queries is None else queries.to(form.value.device)
    budget = memory_budget_bytes if memory_budget_bytes is not None else memory_budget(form.value.device)
    step = _plan(sub, len(q_index), aggregate, budget, chunk)
    nd = sub.shape[1]
    dev = form.value.device
    out: Tensor | None = None  # [b, nd, q, L] for aggregate="none" over several chunks, filled in place
    biases: list[Tensor] = []
    total: Tensor | None = None  # [b, q, L]
    for start in range(0, nd, step):
        index = torch.arange(start, min(nd, start + step), device=dev)
        part = sub if step >= nd else sub.channels(index)
        rows = None if queries is None else q_index
        if aggregate == "none" and step < nd and isinstance(part, LinearForm) and part.head_index is not None:
            # α per head, spread by compose straight into this chunk's slice of the result: no map of the
            # chunk to copy over. In one chunk the spread stays in `core`, where it is faster
            # (benchmarks/implicit_attention_results.md, "Choices measured").
            alpha = part.core(rows, chunk, spread=False)  # [b, heads, q, L]
            if out is None:
                out = alpha.new_empty(b, nd, len(q_index), L)
            maps, bias = part.compose(alpha, q_index, per_head=True, out=out[:, start:start + len(index)])
        else:
            alpha = part.core(rows, chunk)  # [b, dc, q, L]
            maps, bias = part.compose(alpha, q_index)  # maps: this chunk's own (fresh), free to overwrite
        del alpha
        biases.append(bias)
        if aggregate == "none":
            if step >= nd:
                out = maps
            else:
                if out is None:  # one result written chunk by chunk: no list of pieces and a concatenated copy
                    out = maps.new_empty(b, nd, len(q_index), L)
                if maps.data_ptr() != out[:, start].data_ptr():  # not composed in place already
                    out[:, start:start + len(index)] = maps
            del maps
            continue
        if aggregate == "mean":
            contribution = maps.sum(1)
        elif aggregate == "abs_mean":
            contribution = maps.abs_().sum(1)
        elif aggregate == "gradient":
            g = query_weight.index_select(1, channels.to(dev)[index])[..., q_index]  # [b, dc, q]
            contribution = maps.mul_(g[..., None]).mul_(part.value[:, :, None, :]).clamp_min_(0).sum(1)
        else:  # "norm": ‖Ã[:, t, j] v_j‖ over channels, the value-weighted size (Kobayashi et al. 2020)
            contribution = maps.mul_(part.value[:, :, None, :]).square_().sum(1)
        del maps
        if total is None:
            total = contribution
        else:
            total.add_(contribution)
        del contribution
    if aggregate == "none":
        maps = out
    elif aggregate == "norm":
        maps = total.sqrt_()
    else:
        maps = total.div_(nd)
    return maps, torch.cat(biases, dim=1)


def implicit_attention(
    model: HookedModel,
    tokens: Tensor | str,
    layer: int = 0,
    *,
    mode: str = "exact",
    channels: int | Sequence[int] | Tensor | None = None,
    aggregate: str = "none",
    queries: int | Sequence[int] | Tensor | None = None,
    chunk: int | None = DEFAULT_CHUNK,
    memory_budget_bytes: int | None = None,
    cache: dict | None = None,
    initial_state: Any = None,
) -> ImplicitAttention:
    """The implicit-attention maps of `layer` over `tokens` (Zimerman et al. 2024, eq. 12).

    mode: "exact" (everything the layer does, reproduces it) or "paper" (S6/SSD core alone, as Ali
    et al. 2024 compute it; the same as "exact" for families with nothing to drop); Mamba2 adds
    "normed" (through its gated RMSNorm, the norm's factor held fixed; see `mamba2`). channels: a subset
    (default all). aggregate: "none" (per channel), "mean" (the papers), "abs_mean", "norm"
    (value-weighted). queries: only these rows, O(channels · n · L) each. The memory the result
    and the work need is checked against the budget first (`MemoryBudgetError` names the bytes).
    initial_state: the model's per-layer initial state; its contribution goes to `bias`.

    >>> import torch
    >>> from workbench.models import HookedRecurrentLM, RecurrentConfig
    >>> model = HookedRecurrentLM(RecurrentConfig(family="s6", n_layers=1, d_model=8, d_hidden=8,
    ...                                           d_vocab=5, d_state=4))
    >>> att = implicit_attention(model, torch.tensor([[1, 2, 3, 4]]), layer=0)
    >>> tuple(att.maps.shape), att.max_error() < 1e-5
    ((1, 8, 4, 4), True)
    """
    family = family_of(model)
    _check_mode(family, mode)
    _check_aggregate(aggregate)
    layer = _check_layer(model, layer)
    tokens = to_tokens(model, tokens)
    if cache is None:
        cache = record(model, tokens, [layer], mode, memory_budget_bytes, initial_state)
    form = family.form(model, cache, layer, mode)
    b, d, L = form.shape
    channel_index = _resolve_channels(channels, d, family.channel_name)
    query_index = _resolve_queries(queries, L)
    maps, bias = attend(form, channels=channel_index, queries=query_index, aggregate=aggregate,
                        chunk=chunk, memory_budget_bytes=memory_budget_bytes)
    q = torch.arange(L) if query_index is None else query_index
    dev = form.value.device
    sub = form.channels(channel_index.to(dev)) if len(channel_index) != d else form
    return ImplicitAttention(
        maps=maps, value=sub.value, bias=bias, output=sub.output[..., q.to(dev)],
        family=model.cfg.family, layer=layer, mode=mode, aggregate=aggregate,
        channels=channel_index, queries=q, value_name=form.value_name, output_name=form.output_name,
    )


def implicit_attention_row(model: HookedModel, tokens: Tensor | str, query: int, layer: int = 0,
                           **kwargs: Any) -> ImplicitAttention:
    """Row `query` of the maps only, in O(channels · n · L): maps [batch, channel, 1, key]."""
    return implicit_attention(model, tokens, layer, queries=[query], **kwargs)


def implicit_attention_layers(model: HookedModel, tokens: Tensor | str, layers: Sequence[int] | None = None,
                              **kwargs: Any) -> list[ImplicitAttention]:
    """`implicit_attention` for several layers (default all) from one forward pass."""
    family = family_of(model)
    mode = kwargs.get("mode", "exact")
    _check_mode(family, mode)
    tokens = to_tokens(model, tokens)
    layers = list(range(len(model.blocks))) if layers is None else [_check_layer(model, la) for la in layers]
    cache = record(model, tokens, layers, mode, kwargs.get("memory_budget_bytes"),
                   kwargs.pop("initial_state", None))
    return [implicit_attention(model, tokens, layer, cache=cache, **kwargs) for layer in layers]

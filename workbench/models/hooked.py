"""`HookedRecurrentBase` and `HookedRecurrentSeq2Seq`: recurrent models with every state and gate hooked.

Built on TransformerLens's `HookedRootModule`, so `run_with_cache`, `run_with_hooks`, `hooks()` and
names filters work as TransformerLens users expect; positions are always axis 1, including for the
`[batch, pos, d_inner, d_state]` states of S6. The language-model frame that native models and
`transformers` adapters share (`HookedLanguageModel`, and `HookedRecurrentLM`) lives in
`workbench.models.language_model`; `HookedRecurrentLM` is importable from here too.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from workbench.errors import EmptyInputError, UnknownHookError
from workbench.models.blocks import RecurrentBlock
from workbench.models.cache import RecurrentCache, memory_budget
from workbench.models.causality import check_hooks_causal
from workbench.models.config import RecurrentConfig
from workbench.models.edits import Edit, resolve_edits
from workbench.models.hook_checks import check_hook_pairs
from workbench.models.hook_point import ScopedHookPoint, hook_scope
from workbench.models.memory import (
    GRADIENT_GRAPH_FACTOR,
    MemoryEstimate,
    check_estimate,
    checked_by_caller,
    estimate_call,
    grad_will_record,
    is_checked,
)
from workbench.models.mixers.base import dimension_sizes
from workbench.models.paths import DefaultPath, ExecutionPath
from workbench.models.recurrence import ActivationRecorder, State
from workbench.models.specs import RESID, HookSpec
from workbench.models.state_checks import check_initial_state
from workbench.models.transformer_lens_compat import HookedRootModule, HookPoint

NamesFilter = str | Sequence[str] | Callable[[str], bool] | None
__all__ = ["GRADIENT_GRAPH_FACTOR", "HookedRecurrentBase", "HookedRecurrentSeq2Seq", "ModelState", "NamesFilter"]
ModelState = list[State]  # one state dict per layer


class HookedRecurrentBase(DefaultPath, HookedRootModule):
    """Blocks, final norm, hook bookkeeping; subclasses add the input and output maps. `path` is the
    default execution path (`set_default_path`)."""

    def __init__(
        self, cfg: RecurrentConfig | Any, blocks: Sequence[nn.Module] | None = None,
        ln_final: nn.Module | None = None,
    ):
        """Native models build their blocks and final norm from `cfg`; adapters pass the ones that
        wrap a `transformers` model (their `cfg` is a `TransformersConfig`)."""
        super().__init__()
        self.cfg = cfg
        if blocks is None:
            blocks = [RecurrentBlock(cfg) for _ in range(cfg.n_layers)]
        self.blocks = nn.ModuleList(blocks)
        from workbench.models.blocks import Norm

        self.ln_final = Norm(cfg) if ln_final is None else ln_final
        self.tokenizer: Any = None

    def setup(self) -> None:
        """TransformerLens's `setup` (names every hook point), then a check that each is a
        `ScopedHookPoint`: a plain `HookPoint` would share one call's hooks with every thread."""
        super().setup()
        self._name_spliced_hooks()
        plain = [name for name, point in self.hook_dict.items() if not isinstance(point, ScopedHookPoint)]
        if plain:
            raise TypeError(f"hook points {plain} are plain TransformerLens HookPoints; build them as "
                            "workbench.models.hook_point.ScopedHookPoint() so hooks stay per call")

    def spliced_modules(self) -> list[nn.Module]:
        """Modules spliced into the forward pass at a hook (SAEs, `workbench.sae.splice_sae`): each
        has `spliced_at` (the hook's name) and `hook_specs(dims)`; they live in `self.saes`."""
        saes = self._modules.get("saes")
        return [] if saes is None else list(saes.values())

    def _name_spliced_hooks(self) -> None:
        """A spliced module's hook points are named after the hook they sit on, as SAELens names them:
        `blocks.0.mixer.hook_c.hook_sae_acts_post`, not their place in the module tree."""
        for key, module in (self._modules.get("saes") or {}).items():
            for local, point in module.named_children():
                if not isinstance(point, HookPoint):
                    continue
                old, new = f"saes.{key}.{local}", f"{module.spliced_at}.{local}"
                self.hook_dict.pop(old, None)
                self.mod_dict.pop(old, None)
                point.name = new
                self.hook_dict[new] = point
                self.mod_dict[new] = point

    def _spliced_specs(self, specs: dict[str, HookSpec]) -> dict[str, HookSpec]:
        """`specs` with each spliced module's hooks right after the hook it sits on."""
        extra = {m.spliced_at: m for m in self.spliced_modules()}
        if not extra:
            return specs
        merged: dict[str, HookSpec] = {}
        for name, spec in specs.items():
            merged[name] = spec
            if name in extra:
                dims = (spec[0][0], spec[0][1], f"{name}:d_in")
                merged.update({f"{name}.{local}": s for local, s in extra[name].hook_specs(dims).items()})
        return merged

    # ----- running -------------------------------------------------------------------------
    def run_blocks(
        self, resid: Tensor, initial_state: ModelState | None, path: ExecutionPath | None,
        mask: Tensor | None = None, stop_at_layer: int | None = None,
    ) -> tuple[Tensor, ModelState]:
        """resid: [batch, pos, d_model] through every block and the final norm; returns it and the
        final states. mask: [batch, pos] (1 = token, 0 = padding) for blocks that read padding.
        `stop_at_layer=k`: blocks 0..k-1 only, no final norm (TransformerLens's `stop_at_layer`)."""
        path = self.resolve_path(path)
        blocks = self.blocks if stop_at_layer is None else self.blocks[:stop_at_layer]
        if initial_state is not None:
            param = next(self.parameters())  # shapes from zero states on the meta device: no memory
            like = [b.zero_state(resid.shape[0], torch.device("meta"), param.dtype) for b in blocks]
            check_initial_state(initial_state, like, resid.device)
        states: ModelState = []
        for layer, block in enumerate(blocks):
            resid, state = block(resid, None if initial_state is None else initial_state[layer], path, mask)
            states.append(state)
        return (self.ln_final(resid) if stop_at_layer is None else resid), states

    @property
    def device(self) -> torch.device:
        """The device of the parameters, where inputs and recordings go (`HookedModel.device`)."""
        return next(self.parameters()).device

    def state_quantities(self, layer: int) -> tuple[str, ...]:
        """The mixer's `state_names` of `layer` that are also hooked per position, in declared order.

        A state s [batch, *dims] counts when `blocks.{layer}.mixer.hook_{s}` is [batch, pos, *dims]:
        LSTM (h, c), S6 (state,) but not its conv window; the one source of "which quantity is the state".
        """
        mixer = self.blocks[layer].mixer
        per_position, states = mixer.hook_specs(), mixer.state_specs()
        return tuple(
            name for name in mixer.state_names
            if name in per_position and per_position[name][0] == _with_pos(states[name][0])
        )

    def initial_state(self, batch: int = 1) -> ModelState:
        """The zero state, one dict per layer, on the model's device and dtype."""
        param = next(self.parameters())
        return [b.zero_state(batch, param.device, param.dtype) for b in self.blocks]

    def weights_loaded(self, *modules: nn.Module) -> contextlib.AbstractContextManager:
        """The weights of `modules` readable for the duration: nothing to do here; adapters under a
        `device_map` load offloaded ones (`workbench.adapters.placement.onloaded`)."""
        return contextlib.nullcontext()

    def kernels_used(self) -> dict[int, str]:
        """Which kernel each layer's mixer ran in the last forward pass."""
        return {layer: block.mixer.last_kernel for layer, block in enumerate(self.blocks)}

    def gradient_routes(self) -> dict[int, str]:
        """How each layer's mixer computed its gradients in the last forward pass: the step loop with
        probes where a recurrent quantity wanted one, else autograd through the kernel that ran."""
        return {
            layer: block.mixer.last_gradient_route or f"autograd through {block.mixer.last_kernel}"
            for layer, block in enumerate(self.blocks)
        }

    # ----- hooks ---------------------------------------------------------------------------
    def hook_specs(self) -> dict[str, HookSpec]:
        """Every hook name -> (dimension names, meaning), in the order they fire."""
        specs: dict[str, HookSpec] = {"hook_embed": self._embed_spec()}
        for layer, block in enumerate(self.blocks):
            for name, spec in block.hook_specs(layer).items():
                specs[f"blocks.{layer}.{name}"] = spec
        specs["ln_final.hook_normalized"] = (RESID, "final normalised residual stream")
        specs[self._output_hook] = self._output_spec()
        specs = self._spliced_specs(specs)
        missing = set(self.hook_dict) - set(specs)
        if missing:
            raise AssertionError(f"hooks without a spec: {sorted(missing)}")
        return specs

    def dimension_sizes(self, batch: int = 1, pos: int = 1) -> dict[str, int]:
        """Size of every dimension name the hook specs use, for `batch` x `pos`."""
        sizes = dimension_sizes(self.cfg, batch=batch, pos=pos)
        for module in self.spliced_modules():  # a spliced SAE's d_in and d_sae
            sizes[f"{module.spliced_at}:d_in"] = module.cfg.d_in
            sizes[f"{module.spliced_at}:d_in->d_sae"] = module.cfg.d_sae
        return sizes

    def hook_table(self, batch: int = 1, pos: int = 1) -> list[dict[str, Any]]:
        """One row per hook: name, shape (names and sizes for `batch` x `pos`), meaning."""
        sizes = self.dimension_sizes(batch, pos)
        rows = []
        for name, (dims, meaning) in self.hook_specs().items():
            shape = [sizes[d] for d in dims]
            rows.append({
                "name": name,
                "dims": "[" + ", ".join(dims) + "]",
                "shape": tuple(shape),
                "meaning": meaning,
            })
        return rows

    def print_hook_table(self) -> None:
        """Print the hook table as aligned text."""
        rows = self.hook_table()
        width = max(len(r["name"]) for r in rows)
        dims_width = max(len(r["dims"]) for r in rows)
        for row in rows:
            print(f"{row['name']:<{width}}  {row['dims']:<{dims_width}}  {row['meaning']}")

    # Other tools' names for our hook points (alias -> our name), e.g. TransformerLens 4.x's SSM bridge
    # names on the Mamba adapters (docs/adapters.md); accepted wherever a hook is named.
    hook_aliases: dict[str, str] = {}

    def canonical_hook_name(self, name: str) -> str:
        """Our name for `name`: itself, or what an alias stands for."""
        return self.hook_aliases.get(name, name)

    def resolve_names(self, names_filter: NamesFilter) -> list[str]:
        """Hook names selected by a TransformerLens-style names filter (aliases resolved; a predicate
        sees our names); unknown names raise."""
        known = list(self.hook_dict)
        if names_filter is None:
            return known
        if isinstance(names_filter, str):
            names_filter = [names_filter]
        if callable(names_filter):
            return [n for n in known if names_filter(n)]
        for name in names_filter:
            self.check_hook_name(name)
        wanted = {self.canonical_hook_name(name) for name in names_filter}
        return [n for n in known if n in wanted]

    def check_hook_name(self, name: str) -> None:
        if self.canonical_hook_name(name) not in self.hook_dict:
            raise UnknownHookError(name, [*self.hook_dict, *self.hook_aliases])

    def add_hook(self, name, hook, dir="fwd", is_permanent=False, level=None, prepend=False):
        """As TransformerLens, but an unknown hook name raises `UnknownHookError` with suggestions."""
        if isinstance(name, str):
            self.check_hook_name(name)
            name = self.canonical_hook_name(name)
        return super().add_hook(name, hook, dir=dir, is_permanent=is_permanent, level=level,
                                prepend=prepend)

    def _enable_hook(self, name, hook, dir):
        """Used by `hooks(reset_hooks_end=False)`: check string names before TransformerLens does."""
        if isinstance(name, str):
            self.check_hook_name(name)
            name = self.canonical_hook_name(name)
        return super()._enable_hook(name=name, hook=hook, dir=dir)

    def _hook_points_named(self, name: str | Callable[[str], bool], argument: str) -> list[ScopedHookPoint]:
        """The hook points a (name, hook) pair's name selects: one name, or a predicate on names."""
        if isinstance(name, str):
            self.check_hook_name(name)
            return [self.hook_dict[self.canonical_hook_name(name)]]
        if callable(name):
            return [point for n, point in self.hook_dict.items() if name(n)]
        raise TypeError(f"{argument}: a hook name must be a string or a predicate on names, got "
                        f"{type(name).__name__} {name!r}")

    @contextlib.contextmanager
    def hooks(
        self, fwd_hooks: Sequence[tuple[Any, Callable]] = (), bwd_hooks: Sequence[tuple[Any, Callable]] = (),
        reset_hooks_end: bool = True, clear_contexts: bool = False,
    ) -> Iterator[HookedRecurrentBase]:
        """As TransformerLens's `hooks()`, but the hooks belong to this block in this thread: a forward
        pass in another thread on the same model does not see them (`workbench.models.hook_point`).
        Backward hooks stay bound to the tensors of the forward passes run inside the block, so a
        later `backward()` reaches them. `reset_hooks_end=False` keeps the hooks on the model after
        the block, model-wide for every thread, as TransformerLens does."""
        fwd_pairs = check_hook_pairs(fwd_hooks, "fwd_hooks")
        bwd_pairs = check_hook_pairs(bwd_hooks, "bwd_hooks")
        if not reset_hooks_end:
            with super().hooks(fwd_pairs, bwd_pairs, reset_hooks_end=False,
                               clear_contexts=clear_contexts) as model:
                yield model
            return
        points = [(self._hook_points_named(n, "fwd_hooks"), fn) for n, fn in fwd_pairs]
        backward = [(self._hook_points_named(n, "bwd_hooks"), fn) for n, fn in bwd_pairs]
        with hook_scope() as scope:
            for direction, pairs in (("fwd", points), ("bwd", backward)):
                for selected, fn in pairs:
                    for point in selected:
                        scope.add(point, fn, direction)
            try:
                yield self
            finally:
                if clear_contexts:
                    self.clear_contexts()

    def run_with_hooks(
        self, *model_args: Any, fwd_hooks: Sequence[tuple[Any, Callable]] = (), bwd_hooks: Sequence = (),
        reset_hooks_end: bool = True, clear_contexts: bool = False, edits: Sequence[Edit] = (),
        check_causal: bool = False, **model_kwargs: Any,
    ) -> Any:
        """As TransformerLens, plus `edits`: declarative `Edit`s applied (after `fwd_hooks`) in linear
        time, as segment boundaries of the fast scan (`workbench.models.edits`). The hooks are this
        call's own (`hooks()`), so concurrent calls on one model do not see each other's.
        `check_causal=True` first probes every Python forward hook for causality
        (`workbench.models.causality`) and raises `NonCausalHookError` naming the positions that leaked."""
        fwd_hooks = check_hook_pairs(fwd_hooks, "fwd_hooks")
        inputs = _first_input(model_args, model_kwargs)
        if edits:
            batch, length = self._batch_and_length(inputs)
            resolved = resolve_edits(self, edits, batch, length)
            fwd_hooks = [*fwd_hooks, *((edit.hook, edit) for edit in resolved)]
        if check_causal:
            check_hooks_causal(self, fwd_hooks, inputs, model_kwargs)
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts) as hooked_model:
            return hooked_model.forward(*model_args, **model_kwargs)

    def run_with_edits(self, *model_args: Any, edits: Sequence[Edit], **model_kwargs: Any) -> Any:
        """The forward pass with `edits` (declarative `Edit`s, several hooks, positions and batch rows
        at once) applied in linear time: `model.run_with_edits(tokens, edits=[Edit(...)], path=...)`."""
        return self.run_with_hooks(*model_args, edits=edits, **model_kwargs)

    def recording_bytes(self, batch: int, pos: int, names: Sequence[str]) -> int:
        """Bytes a cache of `names` holds for `batch` x `pos`, computed before anything runs."""
        sizes = self.dimension_sizes(batch, pos)
        specs = self.hook_specs()
        element = next(self.parameters()).element_size()
        return sum(math.prod(sizes[d] for d in specs[n][0]) * element for n in names)

    def run_with_cache(
        self,
        *model_args: Any,
        names_filter: NamesFilter = None,
        device: torch.device | str | None = None,
        remove_batch_dim: bool = False,
        incl_bwd: bool = False,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        pos_slice: int | slice | Sequence[int] | None = None,
        memory_budget_bytes: int | None = None,
        edits: Sequence[Edit] = (),
        check_causal: bool = False,
        **model_kwargs: Any,
    ) -> tuple[Any, RecurrentCache]:
        """Run and record every hook the filter selects, as TransformerLens does.

        Differences: the cache is a `RecurrentCache` (a dict with `.metadata`), `pos_slice` slices
        axis 1 of every tensor that has a position axis, the call's whole peak (recording, logits,
        work buffers, autograd graph: `estimate_memory`) is checked against the memory budget first
        (`MemoryBudgetError` names the bytes by part), and `edits` (declarative `Edit`s, as in
        `run_with_edits`) apply before the recording. The recorders are this call's own (`hooks()`):
        concurrent calls on one model each get their own activations. `check_causal=True` probes the
        Python hooks of an enclosing `hooks()` block (and model-wide ones) for causality first, as
        `run_with_hooks` does.
        """
        names = self.resolve_names(names_filter)
        inputs = _first_input(model_args, model_kwargs)
        if check_causal:
            check_hooks_causal(self, (), inputs, model_kwargs)
        estimate = self.estimate_memory(
            inputs, names_filter=names, incl_bwd=incl_bwd, return_type=model_kwargs.get("return_type", "logits"),
            path=model_kwargs.get("path"), initial_state=model_kwargs.get("initial_state"),
        )
        batch, pos = estimate.batch, estimate.pos
        hooks = f"{len(names)} hook{'' if len(names) == 1 else 's'}"
        check_estimate(self, estimate, memory_budget_bytes or memory_budget(device or self.device),
                       what=f"run_with_cache recording {hooks}", recorded=names,
                       path=self.resolve_path(model_kwargs.get("path")))
        store: dict[str, Tensor] = {}
        recorder = ActivationRecorder(store, device)
        fwd = [(edit.hook, edit) for edit in resolve_edits(self, edits, batch, pos)] if edits else []
        fwd += [(n, recorder) for n in names]
        bwd = [(n, _GradientRecorder(store, device)) for n in names] if incl_bwd else []
        with self.hooks(fwd_hooks=fwd, bwd_hooks=bwd, reset_hooks_end=reset_hooks_end,
                        clear_contexts=clear_contexts), checked_by_caller():
            out = self(*model_args, **model_kwargs)
            if incl_bwd:
                out.backward()
        specs = self.hook_specs()
        cache = RecurrentCache(model=self, metadata={
            "path": self.resolve_path(model_kwargs.get("path")),
            "kernels": self.kernels_used(),
        })
        if incl_bwd:
            cache.metadata["gradients"] = self.gradient_routes()
            # a hooked value the loss does not depend on (differentiably) has gradient zero: say so
            # rather than leave the entry out (Griffin's integer position, for one)
            unreached = [n for n in names if n in store and f"{n}_grad" not in store]
            for name in unreached:
                store[f"{name}_grad"] = torch.zeros_like(store[name])
            cache.metadata["zero_gradients"] = unreached
        for name in names:
            for key in (name, f"{name}_grad"):
                if key not in store:
                    continue
                tensor = store[key]
                if pos_slice is not None and "pos" in specs[name][0]:
                    tensor = _slice_positions(tensor, pos_slice)
                if remove_batch_dim:
                    if tensor.shape[0] != 1:
                        raise ValueError("remove_batch_dim needs batch size 1")
                    tensor = tensor[0]
                cache[key] = tensor
        return out, cache

    def estimate_memory(
        self, inputs: Any, *, names_filter: NamesFilter = (), incl_bwd: bool = False,
        return_type: str | None = "logits", path: ExecutionPath | None = None,
        initial_state: ModelState | None = None, grad: bool | None = None,
    ) -> MemoryEstimate:
        """The bytes a call on `inputs` would hold at its peak, by part, before anything runs.

        `names_filter`: what `run_with_cache` would record (None: every hook, as there; the default
        `()`: a plain forward). `grad` None: autograd is on when grad mode is and a parameter or the
        initial state requires grad. The memory guard compares `.total` with the budget.
        """
        names = self.resolve_names(names_filter) if names_filter is not None else list(self.hook_dict)
        batch, pos = self._batch_and_length(inputs)
        if grad is None:
            grad = grad_will_record(self, initial_state)
        return estimate_call(
            self, batch, pos, recorded=names, incl_bwd=incl_bwd, grad=grad, return_type=return_type,
            path=self.resolve_path(path), output_hooked=self._output_hook in names,
        )

    def _guard_forward(
        self, batch: int, pos: int, return_type: str | None, path: ExecutionPath | None,
        initial_state: ModelState | None,
    ) -> None:
        """Refuse a plain forward (`model(...)`, `run_with_hooks`) whose peak is over the budget;
        skipped inside `run_with_cache` and `score`, which checked a larger estimate already."""
        if is_checked():
            return
        output = getattr(self, self._output_hook)
        estimate = estimate_call(
            self, batch, pos, grad=grad_will_record(self, initial_state), return_type=return_type,
            path=self.resolve_path(path), output_hooked=_is_hooked(output),
        )
        check_estimate(self, estimate, None, what="the forward pass", path=self.resolve_path(path))

    def _batch_and_length(self, inputs: Any) -> tuple[int, int]:
        raise NotImplementedError

    def _embed_spec(self) -> HookSpec:
        raise NotImplementedError

    _output_hook = "hook_logits"

    def _output_spec(self) -> HookSpec:
        raise NotImplementedError


def _first_input(model_args: Sequence[Any], model_kwargs: dict[str, Any]) -> Any:
    """The forward pass's input, given by position or by keyword (`inputs` for language models, `x`
    for sequence-to-sequence ones)."""
    if model_args:
        return model_args[0]
    for key in ("inputs", "x", "input"):
        if key in model_kwargs:
            return model_kwargs[key]
    raise TypeError("no input given: pass the tokens (or text) as the first argument")


class _GradientRecorder(ActivationRecorder):
    """Backward hook storing each gradient under `<name>_grad`."""

    def __call__(self, tensor: Tensor, hook: HookPoint) -> None:
        saved = tensor.detach()
        self.store[f"{hook.name}_grad"] = saved.to(self.device) if self.device else saved


def _is_hooked(hook_point: HookPoint) -> bool:
    """Whether a forward hook is attached to `hook_point` for this call (so its value must be
    computed): a model-wide hook or one of the calling thread's scopes (`ScopedHookPoint.fwd_hooks`)."""
    return bool(hook_point.fwd_hooks) or bool(hook_point._forward_hooks)


def _with_pos(dims: tuple[str, ...]) -> tuple[str, ...]:
    """A state's dimension names [batch, *rest] as a per-position hook's: [batch, pos, *rest]."""
    return (dims[0], "pos", *dims[1:])


def _slice_positions(tensor: Tensor, pos_slice: int | slice | Sequence[int]) -> Tensor:
    """Select positions on axis 1 (an int keeps the axis, as a length-1 slice)."""
    if isinstance(pos_slice, int):
        index = pos_slice if pos_slice >= 0 else tensor.shape[1] + pos_slice
        return tensor[:, index : index + 1]
    if isinstance(pos_slice, slice):
        return tensor[:, pos_slice]
    return tensor[:, list(pos_slice)]


class HookedRecurrentSeq2Seq(HookedRecurrentBase):
    """Vector sequences in, vector sequences out (no embedding, no softmax), for algorithmic tasks.

    x [batch, pos, d_input] -> W_in -> recurrent blocks -> final norm -> W_out -> [batch, pos, d_output].
    """

    _output_hook = "hook_output"

    def __init__(self, cfg: RecurrentConfig):
        if cfg.d_input <= 0 or cfg.d_output <= 0:
            raise ValueError("a sequence-to-sequence model needs d_input > 0 and d_output > 0")
        super().__init__(cfg)
        self.W_in = nn.Linear(cfg.d_input, cfg.d_model)
        self.hook_embed = ScopedHookPoint()
        self.W_out = nn.Linear(cfg.d_model, cfg.d_output)
        self.hook_output = ScopedHookPoint()
        self.setup()

    def _embed_spec(self) -> HookSpec:
        return RESID, "input vectors mapped to the residual width"

    def _output_spec(self) -> HookSpec:
        return ("batch", "pos", "d_output"), "output vectors"

    def _as_inputs(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor [batch, pos, d_input] or [pos, d_input], got {type(x).__name__}")
        if x.ndim not in (2, 3):
            raise ValueError(f"x must have shape [batch, pos, d_input] or [pos, d_input], got {tuple(x.shape)}")
        if not (x.is_floating_point() or x.dtype in (torch.int64, torch.int32, torch.bool)):
            raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
        if x.device != self.device:
            raise ValueError(f"x is on {x.device}, the model on {self.device}; move it with .to(model.device)")
        x = x if x.ndim == 3 else x[None]  # [batch, pos, d_input]
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise EmptyInputError(f"empty input of shape {tuple(x.shape)}")
        if x.shape[-1] != self.cfg.d_input:
            raise ValueError(f"inputs have {x.shape[-1]} features, the model takes {self.cfg.d_input}")
        return x.to(next(self.parameters()).dtype)

    def _batch_and_length(self, inputs: Any) -> tuple[int, int]:
        x = self._as_inputs(inputs)
        return x.shape[0], x.shape[1]

    def forward(
        self,
        x: Tensor,
        initial_state: ModelState | None = None,
        return_state: bool = False,
        path: ExecutionPath | None = None,
    ) -> Any:
        """x [batch, pos, d_input] -> y [batch, pos, d_output] (and the final state)."""
        x = self._as_inputs(x)
        self._guard_forward(x.shape[0], x.shape[1], "logits", path, initial_state)
        resid = self.hook_embed(self.W_in(x))  # [batch, pos, d_model]
        resid, states = self.run_blocks(resid, initial_state, path)
        y = self.hook_output(self.W_out(resid))  # [batch, pos, d_output]
        return (y, states) if return_state else y


def __getattr__(name: str) -> Any:
    """`HookedRecurrentLM` moved to `workbench.models.language_model`; still importable from here."""
    if name == "HookedRecurrentLM":
        from workbench.models.language_model import HookedRecurrentLM

        return HookedRecurrentLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

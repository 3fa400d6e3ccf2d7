"""Where each part of a device-mapped `transformers` model runs, and the rule every adapter follows
under accelerate's `device_map` (DESIGN: big checkpoints across devices).

accelerate places a model by hooks on its modules (`AlignDevicesHook`): a module mapped to a device
holds its weights there and its hook moves the call's inputs there; a module offloaded to the CPU or
disk holds its weights on the `meta` device and its hook loads them only while the module is called.
An adapter reads weights around the library's modules (`F.linear(x, hf.in_proj.weight)`), which
such hooks never see. So the rule, applied by `HookedTransformersLM.run_blocks` for every family:

1. each block runs on one device, its `execution_device`; the residual stream, the mask and the
   carried state move there at the block boundary, and the logits come back to the input's device;
2. the block runs inside `onloaded(block)`: every offloaded module in it loads its weights once on
   entry (the hook's own `pre_forward`) and offloads them on exit (`post_forward`); in between the
   hooks do not offload, so a module called inside the block and read directly stays loaded;
3. outside the blocks, a module that is called (the embedding, the head) needs nothing, its own hook
   acts; a weight read directly is read inside `onloaded` (`W_U`, `W_E`); and a library step that
   edits weights in place (RWKV's inference rescaling) misses offloaded ones, so the adapter applies
   it to their outputs instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from workbench.errors import DeviceMapError

__all__ = [
    "DeviceMap",
    "Placement",
    "align_hooks",
    "check_device_map",
    "check_offloaded_weights",
    "execution_device",
    "is_dispatched",
    "onloaded",
    "state_to",
]

DeviceMap = str | Mapping[str, str | int | torch.device]  # as `transformers`' `from_pretrained` takes it
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's automatic maps
_LOCK = threading.Lock()
_ONLOADED: dict[int, int] = {}  # id(hook) -> how many open `onloaded` contexts hold its weights loaded


def align_hooks(module: nn.Module) -> list:
    """The accelerate `AlignDevicesHook`s attached to `module` itself (one, or several in a `SequentialHook`)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    from accelerate.hooks import AlignDevicesHook

    hooks = getattr(hook, "hooks", (hook,))  # a SequentialHook holds several
    return [h for h in hooks if isinstance(h, AlignDevicesHook)]


def is_dispatched(model: nn.Module) -> bool:
    """Whether accelerate placed `model` (a `device_map` load or `accelerate.dispatch_model`)."""
    return any(align_hooks(module) for module in model.modules())


def _as_device(device: torch.device | str | int) -> torch.device:
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


def execution_device(module: nn.Module, name: str) -> torch.device | None:
    """The one device `module` computes on: its hooks' execution device, else where its weights are.

    Modules without parameters (a shared rotary embedding's buffers) do not count. None when nothing in
    `module` says; a module split over several devices raises `DeviceMapError` naming `name`.
    """
    devices: set[torch.device] = set()
    for sub in module.modules():
        if not any(True for _ in sub.parameters(recurse=False)):
            continue
        hooks = [h for h in align_hooks(sub) if h.execution_device is not None]
        if hooks:
            devices.update(_as_device(h.execution_device) for h in hooks)
        else:
            devices.update(p.device for p in sub.parameters(recurse=False) if p.device.type != "meta")
    if len(devices) > 1:
        shown = ", ".join(sorted(str(d) for d in devices))
        raise DeviceMapError(f"{name} computes on several devices ({shown}); the workbench moves the residual "
                             "stream and the state once per block, so map each block whole to one device "
                             "(a device_map entry per layer, e.g. 'backbone.layers.3': 'cuda:1')")
    return next(iter(devices), None)


@dataclass(frozen=True)
class Placement:
    """Where a device-mapped adapter's parts compute: token ids go to `input`; block l runs on `blocks[l]`."""

    input: torch.device
    blocks: tuple[torch.device, ...]
    final_norm: torch.device

    @classmethod
    def of(cls, embed: nn.Module, blocks: Iterable[nn.Module], ln_final: nn.Module) -> Placement:
        """Read from the accelerate hooks of the adapter's embedding, blocks and final norm."""
        cpu = torch.device("cpu")
        first = execution_device(embed, "the embedding") or cpu
        devices, previous = [], first
        for layer, block in enumerate(blocks):
            previous = execution_device(block, f"block {layer}") or previous
            devices.append(previous)
        return cls(first, tuple(devices), execution_device(ln_final, "the final norm") or previous)


def check_offloaded_weights(model: nn.Module) -> None:
    """Every offloaded weight must be in its hook's offload index, else its first use fails deep in
    accelerate (a `KeyError`): tied weights (an embedding shared with the head) mapped to different places."""
    missing, keys_of = [], {}
    for module in model.modules():
        for hook in align_hooks(module):
            weights = hook.weights_map
            if not hook.offload or weights is None:
                continue
            prefix, store = getattr(weights, "prefix", ""), getattr(weights, "dataset", weights)
            if id(store) not in keys_of:
                keys_of[id(store)] = set(getattr(store, "all_keys", None) or store.keys())
            names = [n for n, _ in module.named_parameters(recurse=hook.place_submodules)]
            missing += [prefix + n for n in names if prefix + n not in keys_of[id(store)]]
    if missing:
        raise DeviceMapError(f"the device_map offloads {missing} but accelerate holds no copy of them: they are "
                             "tied to weights mapped elsewhere (as an embedding shared with the output head when "
                             "tie_word_embeddings); map the tied modules to the same place")


@contextlib.contextmanager
def onloaded(*modules: nn.Module) -> Iterator[None]:
    """Weights of every offloaded module in `modules` (and below) loaded for the duration, once.

    Thread-safe and re-entrant: a hook's weights load on the first open context and offload when the
    last one closes; meanwhile the hook itself neither reloads nor offloads (its `offload` is off).
    """
    pairs = [(sub, hook) for module in modules for sub in module.modules() for hook in align_hooks(sub)]
    entered: list[tuple[nn.Module, object]] = []
    try:
        for sub, hook in pairs:
            with _LOCK:  # decided under the lock: another call may be loading or offloading this hook
                if id(hook) not in _ONLOADED:
                    if not hook.offload:
                        continue  # weights in place: nothing to load
                    hook.pre_forward(sub)  # loads the weights (from the CPU copy or the disk index)
                    hook.offload = False
                _ONLOADED[id(hook)] = _ONLOADED.get(id(hook), 0) + 1
            entered.append((sub, hook))
        yield
    finally:
        for sub, hook in reversed(entered):
            with _LOCK:
                _ONLOADED[id(hook)] -= 1
                if _ONLOADED[id(hook)] == 0:
                    del _ONLOADED[id(hook)]
                    hook.offload = True
                    hook.post_forward(sub, None)  # back to `meta`


def state_to(state: Mapping[str, Tensor] | None, device: torch.device) -> dict[str, Tensor] | None:
    """A block's state dict with every tensor on `device` (no copy where it is there already)."""
    return None if state is None else {name: value.to(device) for name, value in state.items()}


def check_device_map(device_map: object, offload_folder: object) -> None:
    """Refuse, before loading, a `device_map` that names no usable device, or "disk" without a folder."""
    if isinstance(device_map, str):
        if device_map not in STRATEGIES:
            _check_device(device_map, "device_map")
        return
    if not isinstance(device_map, Mapping) or not device_map:
        raise DeviceMapError(f"device_map must be one of {', '.join(map(repr, STRATEGIES))}, a device, or a "
                             f"non-empty dict {{module name: device}}; got {device_map!r}")
    disk = []
    for name, where in device_map.items():
        if not isinstance(name, str):
            raise DeviceMapError(f"device_map keys are module names (str, e.g. 'backbone.layers.0'); got {name!r}")
        if where == "disk":
            disk.append(name)
        else:
            _check_device(where, f"device_map[{name!r}]")
    if disk and offload_folder is None:
        raise DeviceMapError(f"device_map puts {disk} on 'disk'; give offload_folder=<a directory> to hold "
                             "their weights while other blocks run")


def _check_device(where: object, label: str) -> None:
    """`where` names a device this machine has ("cpu", a GPU index, "cuda:1", ...)."""
    expected = "'cpu', 'disk', a GPU index or a device such as 'cuda:0'"
    if not isinstance(where, (str, int, torch.device)) or isinstance(where, bool):
        raise DeviceMapError(f"{label} is {where!r}; expected {expected}")
    try:
        device = _as_device(where)
    except (RuntimeError, ValueError) as exc:
        raise DeviceMapError(f"{label} is {where!r}, not a device; expected {expected}") from exc
    if device.type == "meta":
        raise DeviceMapError(f"{label} is 'meta', which holds no weights; expected {expected}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise DeviceMapError(f"{label} is {where!r}, but this machine has {count} CUDA device(s); "
                                 f"expected {expected}")
    elif device.type != "cpu":
        backend = getattr(torch, device.type, None)
        if backend is None or not backend.is_available():
            raise DeviceMapError(f"{label} is {where!r}, which this machine does not have; expected {expected}")

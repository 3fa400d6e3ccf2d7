"""The TransformerLens names the workbench builds on, from either generation it supports (3.9+ or 4.x).

`HookedRootModule` and `HookPoint` exist in both. What differs, and how we meet it:
- `HookedRootModule`: import it from `transformer_lens` (4.0 removed the re-export from
  `transformer_lens.hook_points`; 3.x warns there). 3.x warns only when the base class itself is built.
- `HookPoint.add_hook` returns its `LensHandle` in 4.x and None in 3.x; our `ScopedHookPoint` defines
  its own, which returns the handle under both.
- `HookPoint.pos_dim` (4.x) tells TransformerLens's `pos_slice` where positions are; our own
  `run_with_cache` slices axis 1 itself, so neither generation's slicing is used.
The `[sae]` extra installs 3.x (sae-lens pins transformer-lens below 4); the main lock holds 4.x.
"""

from __future__ import annotations

from importlib import metadata

from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint, LensHandle

__all__ = ["TRANSFORMER_LENS_MAJOR", "HookPoint", "HookedRootModule", "LensHandle"]

TRANSFORMER_LENS_MAJOR = int(metadata.version("transformer-lens").split(".")[0])

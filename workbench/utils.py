"""Hook names, composed in one place: `get_act_name` in the spirit of TransformerLens's `utils.get_act_name`.

Every hook of a hooked recurrent model (native or adapted) is named by this scheme:

| call | hook name | what it holds |
| --- | --- | --- |
| `get_act_name("embed")` | `hook_embed` | token embedding [batch, pos, d_model] |
| `get_act_name("logits")` | `hook_logits` | next-token logits [batch, pos, d_vocab] |
| `get_act_name("resid_post", 2)` | `blocks.2.hook_resid_post` | block-level: `BLOCK_HOOKS` |
| `get_act_name("h", 2)` | `blocks.2.mixer.hook_h` | any other short name: a mixer quantity |
| `get_act_name("initial_c", 0)` | `blocks.0.mixer.hook_initial_c` | the state a mixer starts from |
| `get_act_name("normalized", 1, "ln1")` | `blocks.1.ln1.hook_normalized` | a hook of `LAYER_TYPES` |
| `get_act_name("blocks.0.hook_resid_pre")` | unchanged | a full name passes through |

>>> get_act_name("c", 0), get_act_name("resid_post", 1), get_act_name("post", 1, "mlp")
('blocks.0.mixer.hook_c', 'blocks.1.hook_resid_post', 'blocks.1.mlp.hook_post')
"""

from __future__ import annotations

__all__ = ["BLOCK_HOOKS", "LAYER_TYPES", "block_name", "get_act_name", "hook_layer", "in_layer"]

# Hooks on the block itself (the residual stream and what is added to it), by short name.
BLOCK_HOOKS: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post", "mixer_out", "mlp_out")
# Submodules of a block that hold hooks of their own.
LAYER_TYPES: tuple[str, ...] = ("mixer", "mlp", "ln1", "ln2")
# Model-level hooks outside the blocks, by short name.
_MODEL_HOOKS: tuple[str, ...] = ("embed", "logits", "output")


def block_name(layer: int | object) -> str:
    """`blocks.{layer}`: the prefix of every hook in a block, and how an error names a layer."""
    return f"blocks.{layer}"


def get_act_name(name: str, layer: int | None = None, layer_type: str | None = None) -> str:
    """The full hook name of a short `name` in `layer` (see the module's table); a full name passes."""
    if layer is None:
        if name in _MODEL_HOOKS:
            return f"hook_{name}"
        if "." in name or name.startswith("hook_"):
            return name
        raise ValueError(f"{name!r} is a per-block hook: give its layer, e.g. get_act_name({name!r}, 0)")
    if layer_type is None:
        layer_type = "" if name in BLOCK_HOOKS else "mixer"
    elif layer_type not in LAYER_TYPES:
        raise ValueError(f"unknown layer_type {layer_type!r}; use one of {', '.join(LAYER_TYPES)}")
    inner = f"{layer_type}." if layer_type else ""
    return f"{block_name(layer)}.{inner}hook_{name}"


def hook_layer(name: str) -> int | None:
    """The block index in a hook name (`blocks.3.hook_resid_post` -> 3), None outside blocks."""
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" else None


def in_layer(name: str, layer: int) -> str:
    """The same per-block hook in block `layer` (`blocks.3.mixer.hook_c`, 1 -> `blocks.1.mixer.hook_c`)."""
    source = hook_layer(name)
    if source is None:
        raise ValueError(f"{name!r} is not a per-block hook")
    return block_name(int(layer)) + name[len(block_name(source)):]

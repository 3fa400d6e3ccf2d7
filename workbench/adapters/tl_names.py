"""TransformerLens 4.x's names for the hook points of its SSM bridge, as aliases of ours.

Code written against TransformerLens's `TransformerBridge` on Mamba, FalconMamba or Mamba-2 names
hooks such as `blocks.0.mixer.hook_ssm_out`; on our adapters those names reach the same tensor where
the meaning is the same (`HookedRecurrentBase.hook_aliases`). Where TransformerLens's hook holds
something else (another layout, a pre-activation, an edit that does not propagate), there is no
alias, and `NOT_ALIASED` says what to use instead; docs/adapters.md shows both tables.
"""

from __future__ import annotations

__all__ = ["MAMBA2_ALIASES", "MAMBA_ALIASES", "NOT_ALIASED", "layer_aliases"]

# alias -> our name, per layer ({l}); the same for Mamba-1 and Mamba-2 blocks
BLOCK_ALIASES: dict[str, str] = {
    "blocks.{l}.hook_in": "blocks.{l}.hook_resid_pre",
    "blocks.{l}.hook_out": "blocks.{l}.hook_resid_post",
    "blocks.{l}.norm.hook_out": "blocks.{l}.ln1.hook_normalized",
    "blocks.{l}.hook_mixer_in": "blocks.{l}.ln1.hook_normalized",
    "blocks.{l}.mixer.hook_in": "blocks.{l}.ln1.hook_normalized",
    "blocks.{l}.mixer.hook_out": "blocks.{l}.hook_mixer_out",
    "blocks.{l}.mixer.hook_ssm_out": "blocks.{l}.hook_mixer_out",
    "blocks.{l}.mixer.out_proj.hook_out": "blocks.{l}.hook_mixer_out",
}
MODEL_ALIASES: dict[str, str] = {
    "embed.hook_out": "hook_embed",
    "ln_final.hook_out": "ln_final.hook_normalized",
    "unembed.hook_out": "hook_logits",
}
MAMBA_ALIASES = dict(BLOCK_ALIASES)
MAMBA2_ALIASES = {
    **BLOCK_ALIASES,
    "blocks.{l}.mixer.hook_inner_norm": "blocks.{l}.mixer.hook_normed",  # the gated norm's output
    "blocks.{l}.mixer.inner_norm.hook_out": "blocks.{l}.mixer.hook_normed",
}
# TransformerLens names with no alias here: what theirs holds, and what to use instead
NOT_ALIASED: dict[str, str] = {
    "mixer.hook_ssm_state": "[batch, d_inner, pos, d_state], and an edit there changes only y_t (it does "
                            "not propagate); ours is mixer.hook_state [batch, pos, ...], and an edit "
                            "propagates through the recurrence",
    "mixer.hook_ssm_write": "the write term dt * x * B; not hooked here: edit mixer.hook_delta, "
                            "mixer.hook_B or mixer.hook_x (Mamba-1: mixer.hook_conv)",
    "mixer.hook_ssm_dt / mixer.dt_proj.hook_out": "dt before the softplus; ours, mixer.hook_delta, is after it",
    "mixer.hook_conv / mixer.conv1d.hook_out": "the convolution before its activation, channel first; "
                                               "Mamba-1's mixer.hook_conv here is after the SiLU",
    "mixer.hook_in_proj / mixer.in_proj.hook_out": "x and the gate in one tensor; here mixer.hook_x and "
                                                   "mixer.hook_gate (Mamba-2: mixer.hook_xBC)",
    "mixer.hook_x_proj / mixer.x_proj.hook_out": "dt, B and C in one tensor; here mixer.hook_delta, "
                                                 "mixer.hook_B and mixer.hook_C",
}


def layer_aliases(templates: dict[str, str], n_layers: int, known: set[str]) -> dict[str, str]:
    """Every alias of `templates` (and the model-level ones) over `n_layers` blocks whose target hook
    exists in `known` (our hook names). A name we already use is never an alias: ours wins (our
    `mixer.hook_out` is the mixer's own output, which TransformerLens's `mixer.hook_out` also is)."""
    aliases = {alias: ours for alias, ours in MODEL_ALIASES.items() if ours in known and alias not in known}
    for layer in range(n_layers):
        for alias, ours in templates.items():
            name, target = alias.format(l=layer), ours.format(l=layer)
            if target in known and name not in known:
                aliases[name] = target
    return aliases

"""Hook specs: a hook's documented shape as dimension names, with a one-line meaning.

Defined once here for native mixers and `transformers` adapters alike. Each dimension-name tuple
below has one meaning everywhere: `BP_HIDDEN` is always `[batch, pos, d_hidden]`, `BP_HEADS`
always `[batch, pos, n_heads]`. Names resolve to sizes through a model's `dimension_sizes`.
"""

from __future__ import annotations

from collections.abc import Mapping

# (dimension names, meaning), e.g. (("batch", "pos", "d_model"), "residual stream ...")
HookSpec = tuple[tuple[str, ...], str]

RESID = ("batch", "pos", "d_model")  # the residual stream
LOGITS = ("batch", "pos", "d_vocab")  # next-token logits
BP_HIDDEN = ("batch", "pos", "d_hidden")  # a native mixer's recurrent width, per position
B_HIDDEN = ("batch", "d_hidden")  # ... as a carried state (no position axis)
BP_INNER = ("batch", "pos", "d_inner")  # Mamba's expanded inner width, per position
BP_STATE = ("batch", "pos", "d_state")  # an SSM's state width (B_t, C_t), per position
BP_HEADS = ("batch", "pos", "n_heads")  # one scalar per head, per position


def shared_dims(dims: tuple[str, ...], meanings: Mapping[str, str]) -> dict[str, HookSpec]:
    """Specs of quantities that share one shape: name -> (dims, meaning), in the given order."""
    return {name: (dims, meaning) for name, meaning in meanings.items()}

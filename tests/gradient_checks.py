"""Independent gradients of every hooked quantity, for the `incl_bwd=True` tests (native and adapters).

The oracle does not use backward hooks: an editing forward hook adds a zero tensor that requires grad
to the hooked quantity, and `torch.autograd.grad` differentiates the loss with respect to it. For a
recurrent quantity the edit must reach every later step, so the causal replay (which otherwise
starts only where a value changed) is forced to start at position 0: each step then uses the hook's
output at that position, X_t + delta_t, and d loss / d delta_t is dL/dX_t through the recurrence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from workbench.models import recurrence

Loss = Callable[[Tensor], Tensor]  # output of the forward (loss or logits) -> scalar


def as_loss(out: Tensor) -> Tensor:
    """The scalar to differentiate: the model's loss as is, or a fixed weighting of logits."""
    if out.ndim == 0:
        return out
    weights = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).reshape(out.shape)
    return (out * weights).sum()


def oracle_gradient(model, tokens: Tensor, name: str, shape: tuple[int, ...], monkeypatch,
                    return_type: str = "loss", extra_hooks=()) -> Tensor:
    """dL/d(hook `name`'s value), [shape], by autograd through a forced replay (reference path)."""
    delta = torch.zeros(shape, dtype=next(model.parameters()).dtype, requires_grad=True)

    def add(x: Tensor, hook) -> Tensor:
        return x + delta

    with monkeypatch.context() as patch:
        patch.setattr(recurrence, "first_changed_position", lambda before, after: 0)
        out = model.run_with_hooks(tokens, fwd_hooks=[*extra_hooks, (name, add)], return_type=return_type,
                                   path="reference")
    (grad,) = torch.autograd.grad(as_loss(out), delta, allow_unused=True)
    return torch.zeros(shape, dtype=delta.dtype) if grad is None else grad


def cached_gradients(model, tokens: Tensor, path: str, return_type: str = "loss"):
    """(output, cache) with every hook and its `_grad`: `run_with_cache(incl_bwd=True)` for the loss;
    for logits, `run_with_hooks` with a backward hook on every name and the same weighting."""
    if return_type == "loss":
        return model.run_with_cache(tokens, incl_bwd=True, return_type="loss", path=path)
    store: dict[str, Tensor] = {}

    def record(grad: Tensor, hook) -> None:
        store[f"{hook.name}_grad"] = grad.detach()

    def keep(x: Tensor, hook) -> None:
        store[hook.name] = x.detach()

    names = list(model.hook_dict)
    out = model.run_with_hooks(tokens, fwd_hooks=[(n, recurrence.read_only(keep)) for n in names],
                               bwd_hooks=[(n, record) for n in names], reset_hooks_end=False,
                               return_type=return_type, path=path)
    as_loss(out).backward()
    model.reset_hooks()
    return out, store


PATHS = ("reference", "fused")


def check_every_gradient(model, tokens, monkeypatch, return_type="loss", atol: float = 1e-10):
    """Both paths: every hook has a `_grad` equal to the oracle's; the paths agree with each other."""
    results = {path: cached_gradients(model, tokens, path, return_type) for path in PATHS}
    reference_cache = results["reference"][1]
    for name in model.hook_dict:
        shape = tuple(reference_cache[name].shape)
        expected = oracle_gradient(model, tokens, name, shape, monkeypatch, return_type)
        for path, (_, cache) in results.items():
            key = f"{name}_grad"
            if key not in cache:
                assert return_type != "loss", f"{path}: no gradient for {name}"
                assert not expected.any(), f"{path}: no gradient for {name}, whose gradient is not zero"
                continue
            torch.testing.assert_close(cache[key], expected, atol=atol, rtol=atol, msg=f"{path} {name}")
    torch.testing.assert_close(results["fused"][0], results["reference"][0], atol=atol, rtol=atol)
    return results


def gradients_at_output_and_quantity(model, ids: Tensor, layer: int, quantity: str,
                                     position: int = 8, target: int = 3) -> tuple[Tensor, Tensor]:
    """(∂log p/∂ blocks.{layer}.mixer.hook_out, ∂log p/∂ hook_{quantity}) of one next-token log-probability,
    the first by autograd, the second as a backward hook sees it, in the same run; for the implicit-attention
    families' `output_grad`, which must map the first to the second."""
    store: dict[str, Tensor] = {}

    def keep(tensor: Tensor, hook) -> Tensor:
        store["out"] = tensor
        return tensor

    def keep_grad(grad: Tensor, hook) -> None:
        store["grad"] = grad

    with torch.enable_grad(), model.hooks(fwd_hooks=[(f"blocks.{layer}.mixer.hook_out", keep)],
                                          bwd_hooks=[(f"blocks.{layer}.mixer.hook_{quantity}", keep_grad)]):
        logp = torch.log_softmax(model(ids)[:, position], -1)[:, target].sum()
        (grad_out,) = torch.autograd.grad(logp, store["out"], retain_graph=True)
        logp.backward()
    model.zero_grad(set_to_none=True)
    return grad_out, store["grad"]

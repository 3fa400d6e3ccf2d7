"""The workbench's exceptions: each subclasses a builtin, so `except ValueError` still catches them.

Every message says what went wrong with the user's own values (the character, the tensor, the
bytes) and, where there is one, what to do instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "CheckpointError",
    "CorpusNotFoundError",
    "DeviceMapError",
    "EmptyInputError",
    "HookReturnError",
    "InitialStateError",
    "MemoryBudgetError",
    "MissingTokenizerError",
    "NonCausalHookError",
    "ShadowedModelWarning",
    "SequenceTooLongError",
    "UnknownCharacterError",
    "UnknownHookError",
    "UnknownModelError",
    "format_bytes",
]


def format_bytes(n: float) -> str:
    """Human-readable size with a binary unit, e.g. `1.50 GiB`."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _context(text: str, position: int, width: int = 20) -> str:
    """The text around `position`, as a repr, with the offending character bracketed."""
    start = max(0, position - width)
    before, char, after = (
        text[start:position],
        text[position],
        text[position + 1 : position + 1 + width],
    )
    return f"{before!r} [{char!r}] {after!r}"


class UnknownCharacterError(ValueError):
    """A character outside the tokenizer's vocabulary, when no unknown token was asked for."""

    def __init__(self, char: str, position: int, text: str | None = None, vocab_size: int | None = None):
        self.char = char
        self.position = position
        where = f" (context: {_context(text, position)})" if text is not None else ""
        size = f" of {vocab_size} characters" if vocab_size is not None else ""
        message = (
            f"character {char!r} (U+{ord(char):04X}) at position {position} is not in the "
            f"vocabulary{size}{where}; pass unknown='map' to map unknown characters to the "
            "vocabulary's unknown token"
        )
        super().__init__(message)


class EmptyInputError(ValueError):
    """Empty text or an empty batch where at least one token is needed."""


class SequenceTooLongError(ValueError):
    """An input longer than the `max_length` the caller set as a guard."""

    def __init__(self, length: int, max_length: int, unit: str = "characters"):
        self.length = length
        self.max_length = max_length
        super().__init__(
            f"input has {length} {unit}, more than max_length={max_length}; "
            "shorten it or raise max_length"
        )


class CorpusNotFoundError(FileNotFoundError):
    """A corpus whose source is not on this machine; the message says how to get it."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: a missing file, or tensors that disagree with config."""

    def __init__(
        self,
        message: str,
        *,
        tensor: str | None = None,
        expected: Sequence[int] | None = None,
        actual: Sequence[int] | None = None,
    ):
        self.tensor = tensor
        self.expected = tuple(expected) if expected is not None else None
        self.actual = tuple(actual) if actual is not None else None
        if tensor is not None and expected is not None and actual is not None:
            message = (
                f"{message}: tensor {tensor!r} has shape {list(self.actual)} in the checkpoint, "
                f"but the config expects {list(self.expected)}"
            )
        super().__init__(message)


class UnknownHookError(KeyError):
    """A hook name the model does not have; suggests the closest known names."""

    def __init__(self, name: str, known: Iterable[str] = (), message: str | None = None):
        self.name = name
        self.known = tuple(known)
        if message is None:
            message = f"unknown hook {name!r}"
            close = difflib.get_close_matches(name, self.known, n=3, cutoff=0.6)
            if close:
                message += f"; did you mean {', '.join(repr(c) for c in close)}?"
            elif self.known:
                shown = ", ".join(self.known[:10]) + (", ..." if len(self.known) > 10 else "")
                message += f"; known hooks include {shown} (see model.hook_table())"
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of its argument, quotes and escapes included.
        return self.message


class MemoryBudgetError(MemoryError):
    """A call that would hold more bytes than the memory budget allows; says how many, and by part."""

    def __init__(self, needed_bytes: int, budget_bytes: int, what: str = "recording", hint: str = "",
                 parts: dict[str, int] | None = None):
        self.needed_bytes = int(needed_bytes)
        self.budget_bytes = int(budget_bytes)
        self.parts = dict(parts or {})  # part name -> bytes, where the caller estimated by part
        message = (
            f"{what} needs {format_bytes(needed_bytes)} ({self.needed_bytes:,} bytes) but the "
            f"memory budget is {format_bytes(budget_bytes)} ({self.budget_bytes:,} bytes)"
        )
        shown = sorted(((n, b) for n, b in self.parts.items() if b > 0), key=lambda item: -item[1])
        if shown:
            message += " [" + ", ".join(f"{name} {format_bytes(size)}" for name, size in shown) + "]"
        message += (
            f"; {hint}"
            if hint
            else ("; record fewer hooks (names_filter), a shorter window, or raise the budget")
        )
        super().__init__(message)


class UnknownModelError(KeyError):
    """A model name that is neither an embedded model nor a checkpoint directory."""

    def __init__(self, name: str, known: Iterable[str]):
        known = sorted(known)
        listing = ", ".join(repr(k) for k in known) if known else "none are installed"
        self.message = (
            f"unknown model {name!r}: not an embedded model (known: {listing}) and not a "
            "checkpoint directory; see workbench.list_models() or `workbench list`"
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class DeviceMapError(ValueError):
    """A `device_map` the workbench cannot honour: an unknown or absent device, "disk" without an
    `offload_folder`, a block split over several devices, a tied weight offloaded apart from its twin,
    or a map given with a model object; names the entry and what to give instead."""


class InitialStateError(TypeError, ValueError):
    """An `initial_state` that is not one dict of tensors per layer with the model's state names, shapes,
    a floating dtype and the model's device (`model.initial_state(batch)` gives one that is)."""


class HookReturnError(TypeError, ValueError):
    """A hook that returned something other than None or a tensor of its input's shape, dtype and device."""


class NonCausalHookError(ValueError):
    """A hook whose output at a position changed when only later positions of its input changed
    (`check_causal=True`); names the hook and the positions that leaked."""


class MissingTokenizerError(ValueError):
    """Text given to a model with no tokenizer (e.g. a Hugging Face directory without tokenizer
    files); token ids still work, and the message says how to attach one."""


class ShadowedModelWarning(UserWarning):
    """`workbench.load(name)` found both an embedded model and a local directory called `name`."""

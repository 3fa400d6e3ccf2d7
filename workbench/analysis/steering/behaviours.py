"""Built-in behaviours for code language models, each a set of contrastive pairs, held-out prompts
and the characters whose next-character probability measures it (Rimsky et al. 2024 build one
dataset per behaviour the same way: pairs to make the vector, separate prompts to test it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.analysis.steering.vectors import SteeringVector, contrastive_vector

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["BEHAVIOURS", "Behaviour", "behaviour_vector", "get_behaviour"]


@dataclass(frozen=True)
class Behaviour:
    """A behaviour to steer: `positive[i]` shows it, `negative[i]` is a like text without it;
    `prompts` (never among the pairs) are where the probability of a `targets` character is read."""

    name: str
    description: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    prompts: tuple[str, ...]
    targets: str
    position: str = "mean"  # where the vector reads each pair text

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.positive, self.negative, strict=True))


_LOWER = (
    "    return self.value\n", "def get_name(self):\n", "    if not data:\n", "import sys\n",
    "    result = []\n", "class Parser(object):\n", "    raise error\n", "        pass\n",
    "    for key in keys:\n", "    with open(path) as f:\n",
)

BEHAVIOURS: dict[str, Behaviour] = {b.name: b for b in (
    Behaviour(
        name="open_quote",
        description="open a string literal: p(' or \") where an expression begins",
        positive=(
            "    raise ValueError('bad value: %r' % value)\n", '    print("hello world", file=sys.stderr)\n',
            "    name = 'default'\n", '    msg = "cannot open file"\n',
            "    parser.add_argument('--verbose', action='store_true')\n",
            '    return "<%s object>" % name\n', "    warnings.warn('deprecated', DeprecationWarning)\n",
            '    key = "utf-8"\n', "    sep = ', '.join(parts)\n", '    os.environ["HOME"] = home\n',
        ),
        negative=(
            "    raise ValueError(value)\n", "    print(result, file=sys.stderr)\n",
            "    name = default\n", "    msg = self.message\n",
            "    parser.add_argument(verbose, action=store)\n", "    return self.name + 1\n",
            "    warnings.warn(msg, category)\n", "    key = self.key\n", "    sep = sep.join(parts)\n",
            "    os.environ[home] = home\n",
        ),
        prompts=("    x = ", "    print(", "    return ", "    raise TypeError(", "    self.name = ",
                 "    d[", "    label = ", "    log.info("),
        targets="'\"",
    ),
    Behaviour(
        name="indent",
        description="indent deeply: p(space) right after a newline",
        positive=(
            "            if x is None:\n                return\n",
            "                for k in keys:\n                    del d[k]\n",
            "        while True:\n            data = f.read()\n",
            "            try:\n                os.remove(p)\n",
            "                    break\n", "            else:\n                result.append(item)\n",
            "        with lock:\n            self.count += 1\n", "                continue\n",
            "            elif n > 0:\n                n -= 1\n", "                    yield line\n",
        ),
        negative=(
            "if x is None:\n    return\n", "for k in keys:\n    del d[k]\n",
            "while True:\n    data = f.read()\n", "try:\n    os.remove(p)\n", "break\n",
            "else:\n    result.append(item)\n", "with lock:\n    count += 1\n", "continue\n",
            "elif n > 0:\n    n -= 1\n", "yield line\n",
        ),
        prompts=("x = 1\n", "import os\n", "def f(a):\n    return a\n", "class A:\n    pass\n",
                 "y = [1, 2]\n", "print(x)\n", "z = None\n", "del x\n"),
        targets=" ",
    ),
    Behaviour(
        name="upper_case",
        description="write in upper case: p(A-Z) where a name begins",
        positive=tuple(s.upper() for s in _LOWER),
        negative=_LOWER,
        prompts=("    x = ", "def ", "    return ", "import ", "    self.", "class ", "    if ", "# "),
        targets="ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    ),
    Behaviour(
        name="comment",
        description="write a comment: p('#') at the start of a line",
        positive=(
            "    # Return the cached value if there is one.\n",
            "# Copyright the Python Software Foundation.\n",
            "        # skip blank lines and comments\n", "    # XXX this is not thread safe\n",
            "# The default is to use the system locale.\n", "            # fall back to the slow path\n",
            "    # Note: the order of these checks matters.\n", "        # the caller owns the lock here\n",
            "    # see the module docstring for details\n", "        # this should never happen\n",
        ),
        negative=(
            "    return self._cache[key]\n", "import os, sys, re\n", "        if not line: continue\n",
            "    self.lock.acquire()\n", "locale = get_default()\n", "            result = slow_path(x)\n",
            "    for check in checks: check()\n", "        lock.release()\n",
            "    doc = module.__doc__\n", "        assert False, state\n",
        ),
        prompts=("def parse(self, data):\n    ", "class Reader:\n    def read(self):\n        ",
                 "import os\n\n", "    x = compute()\n    ", "        for item in items:\n            ",
                 "if __name__ == '__main__':\n    ", "    def close(self):\n        ",
                 "try:\n    value = get()\nexcept KeyError:\n    "),
        targets="#",
    ),
)}


def get_behaviour(behaviour: str | Behaviour) -> Behaviour:
    """A built-in behaviour by name (or the behaviour itself); an unknown name lists the known."""
    if isinstance(behaviour, Behaviour):
        return behaviour
    if behaviour not in BEHAVIOURS:
        raise KeyError(f"unknown behaviour {behaviour!r}; built-in: {', '.join(BEHAVIOURS)}")
    return BEHAVIOURS[behaviour]


def behaviour_vector(model: HookedModel, behaviour: str | Behaviour, hook: str = "resid_post",
                     layer: int | None = None, **kwargs: Any) -> SteeringVector:
    """The contrastive vector (Rimsky et al. 2024, eq. 1) of a behaviour's pairs at `hook`."""
    b = get_behaviour(behaviour)
    kwargs.setdefault("position", b.position)
    kwargs.setdefault("label", f"{b.name} @ {hook}" + ("" if layer is None else f" L{layer}"))
    return contrastive_vector(model, list(b.positive), list(b.negative), hook, layer=layer, **kwargs)

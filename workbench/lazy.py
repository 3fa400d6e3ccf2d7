"""PEP 562 lazy exports: a package names its public attributes and the module each lives in, and
each module is imported only when one of its names is first touched (keeps `import` cheap)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose attribute `name` lives in module
    `where[name]` (absolute, or relative to the package when it has no dot)."""

    def module_of(name: str) -> str:
        target = where[name]
        return target if "." in target else f"{package}.{target}"

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(module_of(name)), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(where))

    return __getattr__, __dir__

"""Write docs/errors.md: every exception and warning class the workbench defines, what it is caught
as, when it is raised (its docstring) and where, plus the builtin errors it raises directly.

Read from the source with `ast` (nothing is imported), so the table follows the code: add a class or a
`raise`, run `python tools/write_errors_table.py`, commit the result. `tests/test_errors_table.py`
fails when docs/errors.md is out of date.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workbench"
TABLE = ROOT / "docs" / "errors.md"
BUILTIN_EXCEPTIONS = {name for name in dir(builtins)
                      if isinstance(getattr(builtins, name), type) and issubclass(getattr(builtins, name),
                                                                                  BaseException)}


@dataclass
class ErrorClass:
    """One exception or warning class defined in the package."""

    name: str
    module: str
    bases: list[str]
    doc: str
    raised_in: set[str] = field(default_factory=set)


def module_name(path: Path) -> str:
    """workbench/models/hooked.py -> workbench.models.hooked (a package's __init__ -> the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> list[tuple[str, ast.Module]]:
    """(module name, parsed tree) for every Python file of the package, in path order."""
    return [(module_name(p), ast.parse(p.read_text(encoding="utf-8"), str(p))) for p in sorted(PACKAGE.rglob("*.py"))]


def base_names(node: ast.ClassDef) -> list[str]:
    """The class's bases as written: `ValueError`, `errors.EmptyInputError` -> `EmptyInputError`."""
    names = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph on one line (the table's "when")."""
    if not doc:
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def builtin_roots(name: str, classes: dict[str, ErrorClass]) -> list[str]:
    """The builtin exception classes `name` derives from (what `except` can catch it as), in order."""
    if name in BUILTIN_EXCEPTIONS:
        return [name]
    roots: list[str] = []
    for base in classes[name].bases:
        for root in builtin_roots(base, classes) if (base in classes or base in BUILTIN_EXCEPTIONS) else []:
            if root not in roots:
                roots.append(root)
    return roots


def collect(trees: list[tuple[str, ast.Module]]) -> tuple[dict[str, ErrorClass], dict[str, dict[str, int]]]:
    """The package's exception classes, and per builtin exception raised directly: module -> sites."""
    candidates = {}
    for module, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                candidates[node.name] = ErrorClass(node.name, module, base_names(node),
                                                   first_paragraph(ast.get_docstring(node)))
    classes: dict[str, ErrorClass] = {}
    changed = True
    while changed:  # a class is an exception class when one of its bases is (transitively)
        changed = False
        for name, candidate in candidates.items():
            if name not in classes and any(b in BUILTIN_EXCEPTIONS or b in classes for b in candidate.bases):
                classes[name] = candidate
                changed = True
    direct: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for module, tree in trees:
        for node in ast.walk(tree):
            raised = _raised_name(node)
            if raised is None:
                continue
            if raised in classes:
                classes[raised].raised_in.add(module)
            elif raised in BUILTIN_EXCEPTIONS:
                direct[raised][module] += 1
    return classes, direct


def _raised_name(node: ast.AST) -> str | None:
    """The class a `raise X(...)` or `warnings.warn(..., X)` names, if any."""
    if isinstance(node, ast.Raise) and node.exc is not None:
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(target, ast.Name):
            return target.id
        if isinstance(target, ast.Attribute):
            return target.attr
    if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "warn":
        category = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "category"), None)
        if isinstance(category, ast.Name):
            return category.id
    return None


def render(classes: dict[str, ErrorClass], direct: dict[str, dict[str, int]]) -> str:
    """The Markdown page."""
    lines = [
        "# Errors and warnings",
        "",
        "<!-- Generated by tools/write_errors_table.py from the source; tests/test_errors_table.py checks",
        "     it is up to date. Edit the classes' docstrings, not this file. -->",
        "",
        "Bad input gets one clear error that names the argument, what was expected and what was given.",
        "Every class below subclasses a builtin, so `except ValueError` (or the column's other builtins)",
        "still catches it. Anything else escaping from the workbench (a raw error from inside torch, a",
        "hang, an out-of-memory kill) is a bug: `tests/test_bad_inputs.py` and `tests/test_fuzz_public_api.py`",
        "hold the public functions to this list.",
        "",
        "## The workbench's own classes",
        "",
        "| class | caught as | defined in | when | raised in |",
        "|---|---|---|---|---|",
    ]
    errors = sorted((c for c in classes.values() if not _is_warning(c.name, classes)), key=lambda c: c.name)
    warnings_ = sorted((c for c in classes.values() if _is_warning(c.name, classes)), key=lambda c: c.name)
    for item in errors:
        lines.append(_row(item, classes))
    lines += ["", "## Warnings", "", "| class | caught as | defined in | when | raised in |", "|---|---|---|---|---|"]
    for item in warnings_:
        lines.append(_row(item, classes))
    lines += [
        "",
        "## Builtin errors raised directly",
        "",
        "Argument checks that fit no class of their own raise the builtin with a message in the same",
        "form (argument, expected, given). Sites are `raise` statements in the source.",
        "",
        "| builtin | sites | modules |",
        "|---|---|---|",
    ]
    for name in sorted(direct):
        modules = direct[name]
        listing = ", ".join(f"`{m}` ({n})" if n > 1 else f"`{m}`" for m, n in sorted(modules.items()))
        lines.append(f"| `{name}` | {sum(modules.values())} | {listing} |")
    return "\n".join(lines) + "\n"


def _is_warning(name: str, classes: dict[str, ErrorClass]) -> bool:
    return any(issubclass(getattr(builtins, root), Warning) for root in builtin_roots(name, classes))


def _row(item: ErrorClass, classes: dict[str, ErrorClass]) -> str:
    caught = ", ".join(f"`{root}`" for root in builtin_roots(item.name, classes))
    where = ", ".join(f"`{m}`" for m in sorted(item.raised_in)) or "(raised by callers, or a base class)"
    when = item.doc.replace("|", "\\|") or "(no docstring)"
    return f"| `{item.name}` | {caught} | `{item.module}` | {when} | {where} |"


def table_text() -> str:
    """docs/errors.md as the source says it should read now."""
    return render(*collect(sources()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/errors.md is out of date")
    args = parser.parse_args(argv)
    text = table_text()
    if args.check:
        current = TABLE.read_text(encoding="utf-8") if TABLE.is_file() else ""
        if current != text:
            print(f"{TABLE} is out of date: run python tools/write_errors_table.py", file=sys.stderr)
            return 1
        return 0
    TABLE.write_text(text, encoding="utf-8")
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

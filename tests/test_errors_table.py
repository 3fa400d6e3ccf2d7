"""docs/errors.md is generated from the error classes (tools/write_errors_table.py) and up to date."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import workbench.errors

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location("write_errors_table", ROOT / "tools" / "write_errors_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_docs_errors_md_is_up_to_date():
    tool = load_tool()
    assert tool.TABLE.read_text(encoding="utf-8") == tool.table_text(), (
        "docs/errors.md is out of date: run `python tools/write_errors_table.py` and commit it")


def test_every_error_class_is_listed_with_a_docstring_and_a_builtin_base():
    tool = load_tool()
    classes, _ = tool.collect(tool.sources())
    exported = [getattr(workbench.errors, name) for name in workbench.errors.__all__]
    for cls in (c for c in exported if inspect.isclass(c) and issubclass(c, BaseException | Warning)):
        assert cls.__name__ in classes, cls
        assert f"| `{cls.__name__}` |" in tool.TABLE.read_text(encoding="utf-8")
    for item in classes.values():
        assert item.doc, f"{item.module}.{item.name} has no docstring to say when it is raised"
        assert tool.builtin_roots(item.name, classes), item.name


def test_the_table_follows_a_new_class(tmp_path, monkeypatch):
    """The generator reads the source: a new error class in a module shows up in the table."""
    tool = load_tool()
    package = tmp_path / "workbench"
    package.mkdir()
    (package / "extra.py").write_text(
        'class SurpriseError(ValueError):\n    """When something surprising happens."""\n\n\n'
        'def f():\n    raise SurpriseError("x")\n')
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    monkeypatch.setattr(tool, "PACKAGE", package)
    text = tool.table_text()
    assert "| `SurpriseError` | `ValueError` | `workbench.extra` | When something surprising happens. | " \
           "`workbench.extra` |" in text

"""Load your own MIPS tasks for the command line: from a Python file (`--task-file`) or `module:object` (`--task`).

A task file is your own code, imported as a module: every module-level `Task` in it (and every task
it registers with `register_task`) is taken, in definition order.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from workbench.analysis.mips.tasks import TASKS, Task, TaskDefinitionError

__all__ = ["tasks_from_file", "tasks_from_reference"]


def tasks_from_file(path: str | Path) -> list[Task]:
    """Every `Task` a Python file defines at module level or registers; raises when it defines none."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--task-file {str(path)!r}: no such file")
    before = dict(TASKS)
    name = f"mips_task_file_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskDefinitionError(f"--task-file {str(path)!r}: not a Python file (give a .py file)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    found = [v for v in vars(module).values() if isinstance(v, Task)]
    found += [t for n, t in TASKS.items() if before.get(n) is not t]
    tasks = list({t.name: t for t in found}.values())
    if not tasks:
        raise TaskDefinitionError(
            f"--task-file {str(path)!r} defines no Task: write e.g. `count = Task('Count_Sevens', fn, range(10))` "
            "at module level"
        )
    return tasks


def tasks_from_reference(reference: str) -> list[Task]:
    """The `Task` (or list of tasks) named `module:object`, imported as Python imports it (cwd on the path)."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise TaskDefinitionError(f"--task takes module:object (e.g. my_tasks:count_sevens), got {reference!r}")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    module = importlib.import_module(module_name)
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise TaskDefinitionError(f"--task {reference!r}: {module_name} has no {attribute!r}")
        value = getattr(value, part)
    tasks = [value] if isinstance(value, Task) else list(value) if isinstance(value, list | tuple) else None
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise TaskDefinitionError(
            f"--task {reference!r} is a {type(value).__name__}; it must be a Task or a list of Tasks"
        )
    return tasks

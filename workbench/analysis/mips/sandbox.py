"""Run synthesised program source safely: an allow-list of syntax, then a confined child process.

`check_program` admits only the syntax the synthesiser emits plus what a person writing such a
program needs (docs/mips.md argues the list). `Sandbox` runs the checked source in a fresh
`python -I -S` child (`sandbox_child.py`): empty environment, stdin/stdout pipes and stderr on
/dev/null, no other descriptors, root dropped to nobody, CPU-time / address-space / process / file
limits by `resource.setrlimit`, a wall-clock limit from here. Results come back as JSON; nothing of
the program runs in the caller.
"""

from __future__ import annotations

import ast
import json
import marshal
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["ALLOWED_BUILTINS", "SandboxError", "SandboxLimits", "UnsafeProgramError", "Sandbox", "check_program",
           "run_program"]

# pure functions of their arguments: none reaches an object's attributes, the interpreter or the system
ALLOWED_BUILTINS = (
    "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "int", "len", "list", "max", "min", "range",
    "reversed", "set", "sorted", "sum", "tuple", "zip",
)  # fmt: skip
MAX_SOURCE_CHARS = 1_000_000
CHILD = Path(__file__).with_name("sandbox_child.py")

_STATEMENTS = (ast.FunctionDef, ast.Return, ast.Assign, ast.AugAssign, ast.For, ast.While, ast.If, ast.Break,
               ast.Continue, ast.Pass, ast.Expr)
_EXPRESSIONS = (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Compare, ast.Call, ast.Constant, ast.Name,
                ast.Subscript, ast.Slice, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.Attribute,
                ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_OTHER = (ast.Module, ast.arguments, ast.arg, ast.keyword, ast.comprehension, ast.Load, ast.Store,
          ast.boolop, ast.operator, ast.unaryop, ast.cmpop)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_CONSTANTS = (int, float, bool, str, type(None))


class UnsafeProgramError(ValueError):
    """Program source outside the sandbox's allow-list of syntax, or that defines no `program`."""


class SandboxError(RuntimeError):
    """The sandboxed program crashed, hit a limit, or the child process failed (`run_program`)."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one child process may use: CPU seconds, address space, and wall-clock seconds of waiting."""

    cpu_seconds: int = 60
    memory_bytes: int = 1 << 30
    wall_seconds: float = 180.0


def _reject(node: ast.AST, what: str) -> UnsafeProgramError:
    return UnsafeProgramError(f"line {getattr(node, 'lineno', '?')}: {what} (outside the sandbox's allow-list)")


def check_program(source: str) -> ast.Module:
    """Parse `source` and admit it only if every node is on the allow-list; raises `UnsafeProgramError`."""
    if not isinstance(source, str):
        raise UnsafeProgramError(f"program source must be a str, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise UnsafeProgramError(f"the program has {len(source):,} characters, over the {MAX_SOURCE_CHARS:,} limit")
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise UnsafeProgramError(f"the program does not parse: {type(exc).__name__}: {exc}") from None
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    callable_names = defined | set(ALLOWED_BUILTINS)
    for stmt in tree.body:
        docstring = isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        if not (isinstance(stmt, ast.FunctionDef | ast.Assign) or docstring):
            raise _reject(stmt, f"module-level {type(stmt).__name__} (only def, assignment and a docstring)")
    in_comprehension: set[int] = set()
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):  # breadth first, iterative: no recursion limit on deep sources
        if isinstance(node, _COMPREHENSIONS):
            in_comprehension.update(id(child) for child in ast.walk(node) if child is not node)
        if isinstance(node, ast.Attribute) and id(node) not in called:
            raise _reject(node, f"the attribute .{node.attr} other than in a call name.append(value)")
        _check_node(node, callable_names, id(node) in in_comprehension)
    if "program" not in {s.name for s in tree.body if isinstance(s, ast.FunctionDef)}:
        raise UnsafeProgramError("the source defines no function `program(xs)` at module level")
    return tree


def _check_node(node: ast.AST, callable_names: set[str], in_comprehension: bool) -> None:
    """One node against the allow-list (`in_comprehension`: inside one, only the listed builtins may be called)."""
    if not isinstance(node, _STATEMENTS + _EXPRESSIONS + _OTHER):
        raise _reject(node, f"the construct {type(node).__name__}")
    if isinstance(node, ast.FunctionDef):
        args = node.args
        if node.decorator_list or node.returns or args.vararg or args.kwarg or any(
            a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs
        ):
            raise _reject(node, f"def {node.name}: decorators, annotations, *args and **kwargs")
    for name in _names_of(node):
        if name.startswith("__"):
            raise _reject(node, f"the name {name!r} (no dunder names)")
    if isinstance(node, ast.Constant) and type(node.value) not in _CONSTANTS:
        raise _reject(node, f"a {type(node.value).__name__} constant")
    if isinstance(node, ast.Attribute) and node.attr != "append":
        raise _reject(node, f"the attribute .{node.attr} (only list.append)")
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute):
            if in_comprehension:
                raise _reject(node, f".{func.attr}() inside a comprehension (comprehensions have no side effects)")
            if not isinstance(func.value, ast.Name) or node.keywords or len(node.args) != 1:
                raise _reject(node, "a call of .append other than name.append(value)")
        elif not isinstance(func, ast.Name) or func.id not in callable_names:
            what = func.id if isinstance(func, ast.Name) else type(func).__name__
            allowed = ", ".join(ALLOWED_BUILTINS)
            raise _reject(node, f"a call of {what} (only the program's own functions and {allowed})")
        elif in_comprehension and func.id not in ALLOWED_BUILTINS:
            raise _reject(node, f"a call of {func.id}() inside a comprehension (comprehensions have no side effects)")


def _names_of(node: ast.AST) -> list[str]:
    """Every identifier a node introduces or reads."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.FunctionDef):
        return [node.name]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, ast.keyword):
        if node.arg is None:
            raise _reject(node, "**unpacking in a call (it passes names the check cannot see)")
        return [node.arg]
    return []


class Sandbox:
    """One confined child process running one checked program; use as a context manager.

    `check` sends a batch of inputs with their expected outputs and returns the child's verdict on
    the first mismatch (or None); `outputs` returns the program's outputs. A limit, a crash or a
    timeout ends the child: `failure` then says why, and every later call returns it.
    """

    def __init__(self, source: str, limits: SandboxLimits | None = None):
        check_program(source)
        self.limits = limits or SandboxLimits()
        self.failure: dict | None = None
        self.confinement: dict = {}
        self._waited = 0.0
        self._buffer = b""
        self._closed = False
        times = os.times()
        self._children_cpu_before = times.children_user + times.children_system
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and script, no shell
            [sys.executable, "-I", "-S", str(CHILD)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={}, cwd="/", close_fds=True, start_new_session=True,
        )
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._proc.stdout, selectors.EVENT_READ)
        reply = self._exchange({"source": source, "builtins": list(ALLOWED_BUILTINS), "limits": asdict(self.limits)})
        if reply is not None and "ready" in reply:
            self.confinement = reply["confinement"]
            self._check_confinement()
        elif reply is not None:
            self._fail(reply)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_confinement(self) -> None:
        """Refuse to go on unless the child reports no extra descriptors, no environment and the limits set."""
        c = self.confinement
        wanted = {"RLIMIT_CPU": self.limits.cpu_seconds, "RLIMIT_AS": self.limits.memory_bytes, "RLIMIT_NPROC": 0}
        wrong = [k for k, v in wanted.items() if c.get("limits", {}).get(k) != v]
        # the parent passes no environment; the interpreter itself may set LC_CTYPE (PEP 538 locale coercion)
        if c.get("descriptors") != [0, 1, 2] or set(c.get("environment", ["?"])) - {"LC_CTYPE"} or wrong:
            self._fail({"kind": "confinement", "error": f"the child is not confined as required: {c}"})

    def _fail(self, record: dict) -> None:
        self.failure = {"index": None, "got": None, **record}
        self.close()

    def send(self, batch: dict) -> None:
        """Write one batch; the child starts on it while the caller prepares the next (see `receive`)."""
        if self.failure is None:
            try:
                payload = marshal.dumps(batch)
            except ValueError:  # numpy integers from a reference function: plain ints
                payload = marshal.dumps(_plain_ints(batch))
            try:
                self._proc.stdin.write(len(payload).to_bytes(8, "big") + payload)
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._died()

    def receive(self) -> dict | None:
        """The child's answer to the last batch: None when all matched, `{"outputs"}`, or a failure record."""
        reply = self._read_line() if self.failure is None else None
        if reply is None:
            return self.failure
        return None if "ok" in reply else reply

    def check(self, inputs: list, expected: list) -> dict | None:
        """The first input where the program differs from `expected` or fails, as a record; None if all match."""
        self.send({"inputs": inputs, "expected": expected})
        return self.receive()

    def outputs(self, inputs: list) -> list:
        """The program's outputs on each input; raises `SandboxError` when it fails."""
        self.send({"inputs": inputs})
        reply = self.receive()
        if reply is None or "outputs" not in reply:
            raise SandboxError((reply or {}).get("error") or "the sandboxed program returned nothing")
        return reply["outputs"]

    def _exchange(self, message: dict) -> dict | None:
        self.send(message)
        return self._read_line() if self.failure is None else None

    def _read_line(self) -> dict | None:
        """One JSON line from the child within what is left of the wall-clock limit; on failure, None."""
        while b"\n" not in self._buffer:
            left = self.limits.wall_seconds - self._waited
            start = time.perf_counter()
            ready = self._selector.select(timeout=max(left, 0.0)) if left > 0 else []
            self._waited += time.perf_counter() - start
            if not ready:
                self._fail({"kind": "wall", "error": f"over the wall-clock limit of {self.limits.wall_seconds:g} s"})
                return None
            chunk = os.read(self._proc.stdout.fileno(), 1 << 20)
            if not chunk:
                self._died()
                return None
            self._buffer += chunk
            if len(self._buffer) > 64 << 20:
                self._fail({"kind": "protocol", "error": "the child sent more than 64 MiB in one answer"})
                return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            reply = json.loads(line)
        except ValueError:
            self._fail({"kind": "protocol", "error": "the child sent a line that is not JSON"})
            return None
        if isinstance(reply, dict) and "error" in reply and "index" not in reply:  # failed before any batch
            self._fail(reply)
            return None
        return reply

    def _died(self) -> None:
        """The child closed its pipe: say how it ended (a CPU limit is SIGXCPU, then SIGKILL)."""
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code == -signal.SIGXCPU or (code == -signal.SIGKILL and self._cpu_spent() >= self.limits.cpu_seconds):
            self._fail({"kind": "cpu", "error": f"over the CPU-time limit of {self.limits.cpu_seconds} s"})
        elif code is not None and code < 0:
            self._fail({"kind": "died", "error": f"the program's process was killed by {signal.Signals(-code).name}"})
        else:
            self._fail({"kind": "died", "error": f"the program's process ended unexpectedly (exit status {code})"})

    def _cpu_spent(self) -> float:
        """CPU seconds of the children reaped so far (the child, once it has been waited for)."""
        usage = os.times()
        return usage.children_user + usage.children_system - self._children_cpu_before

    def close(self) -> None:
        """End the child (and anything in its session) and reap it."""
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        proc.wait()
        self._selector.close()


def _plain_ints(value):
    """Lists, tuples and dicts with every integer-like leaf (numpy's included) as a Python int."""
    if isinstance(value, dict):
        return {k: _plain_ints(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain_ints(v) for v in value)
    return value if isinstance(value, str | float | type(None)) else int(value)


def run_program(source: str, inputs: list, *, limits: SandboxLimits | None = None) -> list:
    """Outputs of `source`'s `program` on each input sequence, run in the sandbox; raises on any failure.

    Several input channels: give each symbol as a tuple, as the task's reference gets it.
    """
    with Sandbox(source, limits) as box:
        if box.failure is not None:
            raise SandboxError(box.failure["error"])
        return box.outputs([list(xs) for xs in inputs])

"""The sandbox's child process: confine itself, run one synthesised program on batches, answer as JSON lines.

Run by `sandbox.py` as `python -I -S sandbox_child.py` with an empty environment, stdin and stdout
pipes and stderr on /dev/null. Standard library only (the child cannot import the workbench). Also
imported by the parent for `first_mismatch`, the one comparison both sides use.

Protocol. Parent to child (trusted data, so `marshal`: fast, and it keeps tuples), each message an
8-byte length and the marshalled dict: `{"source", "builtins", "limits"}`, then batches
`{"inputs": [...], "expected": [...]}` (or without "expected": return the outputs). Child to parent
(untrusted, so plain JSON, one object per line): `{"ready": true, "confinement": {...}}` or
`{"error", "kind"}`, then per batch `{"ok": n}`, `{"outputs": [...]}` or `{"index", "got", "error", "kind"}`.
"""

from __future__ import annotations

import builtins
import json
import marshal
import os
import sys

MAX_REPLY_CHARS = 100_000  # a `got` longer than this comes back as a short description


def plain(value):
    """Tuples -> lists, recursively, so a program's outputs compare with JSON-decoded expectations."""
    if type(value) in (list, tuple):
        return [plain(v) for v in value]
    return value


def _call(program, xs: list, index: int) -> tuple[list | None, dict | None]:
    """(outputs, None) for one input, or (None, failure record) when the program raises or returns no list."""
    try:
        got = program(list(xs))
        if type(got) not in (list, tuple):
            return None, {"index": index, "got": None, "kind": "mismatch",
                          "error": f"the program returned a {type(got).__name__}, not a list"}
        return list(got), None
    except MemoryError:
        return None, {"index": index, "got": None, "kind": "memory", "error": "MemoryError: over the memory limit"}
    except Exception as exc:  # a crash is a failure, with its input
        return None, {"index": index, "got": None, "kind": "exception", "error": f"{type(exc).__name__}: {exc}"[:500]}


def first_mismatch(program, inputs: list, expected: list) -> dict | None:
    """Run `program` on each input; the first one whose output differs or that raises, as a record, else None."""
    for index, (xs, want) in enumerate(zip(inputs, expected, strict=True)):
        got, failure = _call(program, xs, index)
        if failure is not None:
            return failure
        if got != list(want):
            return {"index": index, "got": got, "kind": "mismatch", "error": ""}
    return None


def run_each(program, inputs: list) -> dict:
    """`{"outputs": [...]}` of `program` on every input, or the first failure record."""
    outputs = []
    for index, xs in enumerate(inputs):
        got, failure = _call(program, xs, index)
        if failure is not None:
            return failure
        outputs.append(plain(got))
    return {"outputs": _sendable(outputs)}


def _sendable(value):
    """`value` if it encodes to a short JSON text, else a one-line description of it."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return f"<a {type(value).__name__} that does not encode as JSON>"
    return value if len(text) <= MAX_REPLY_CHARS else f"<a {type(value).__name__} of {len(text):,} JSON characters>"


def _send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _receive() -> dict | None:
    head = sys.stdin.buffer.read(8)
    if len(head) < 8:
        return None
    return marshal.loads(sys.stdin.buffer.read(int.from_bytes(head, "big")))


def _open_descriptors(limit: int = 1024) -> list[int]:
    """File descriptors open in this process (fstat on each: listing /proc would open one more)."""
    found = []
    for fd in range(limit):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(fd)
    return found


def _confine(limits: dict) -> dict:
    """Drop root to nobody, set the resource limits, check fork is refused; report what holds."""
    import resource

    report = {"descriptors": _open_descriptors(), "environment": sorted(os.environ), "uid": os.getuid()}
    if os.geteuid() == 0:  # root ignores RLIMIT_NPROC: become nobody, who may also write nothing of ours
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        except OSError as exc:
            report["privilege_drop_failed"] = str(exc)
        report["uid"] = os.getuid()
    cpu = int(limits["cpu_seconds"])
    for name, value in (
        ("RLIMIT_CPU", (cpu, cpu + 1)),  # SIGXCPU at the soft limit, SIGKILL a second later
        ("RLIMIT_AS", (int(limits["memory_bytes"]),) * 2),
        ("RLIMIT_NPROC", (0, 0)),
        ("RLIMIT_FSIZE", (0, 0)),
        ("RLIMIT_CORE", (0, 0)),
        ("RLIMIT_NOFILE", (3, 3)),
    ):
        resource.setrlimit(getattr(resource, name), value)
    report["limits"] = {name: resource.getrlimit(getattr(resource, name))[0]
                        for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE")}
    try:
        pid = os.fork()
    except OSError:
        report["fork_refused"] = True
    else:
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        report["fork_refused"] = False
    return report


def main() -> None:
    """Confine, compile the program with only the listed builtins, then check batches until stdin closes."""
    request = _receive()
    if request is None:
        return
    confinement = _confine(request["limits"])
    allowed = {name: getattr(builtins, name) for name in request["builtins"]}
    namespace = {"__builtins__": allowed}
    try:
        exec(compile(request["source"], "<mips program>", "exec"), namespace)  # noqa: S102 - confined child
    except MemoryError:
        _send({"error": "MemoryError while defining the program: over the memory limit", "kind": "memory"})
        return
    except Exception as exc:
        _send({"error": f"defining the program raised {type(exc).__name__}: {exc}"[:500], "kind": "exception"})
        return
    program = namespace.get("program")
    if not callable(program):
        _send({"error": "the source defines no function `program(xs)`", "kind": "unsafe"})
        return
    _send({"ready": True, "confinement": confinement})
    while (batch := _receive()) is not None:
        inputs = batch["inputs"]
        if "expected" not in batch:
            _send(run_each(program, inputs))
            continue
        bad = first_mismatch(program, inputs, batch["expected"])
        if bad is None:
            _send({"ok": len(inputs)})
        else:
            bad["got"] = _sendable(plain(bad["got"]))
            _send(bad)


if __name__ == "__main__":
    main()

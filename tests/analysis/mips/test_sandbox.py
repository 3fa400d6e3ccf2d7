"""The MIPS sandbox: hostile program source gets a failed verdict within its limits, the caller unharmed.

Every hostile route either fails the allow-list (nothing starts) or is stopped inside the confined
child (CPU time, address space); the caller's own CPU time and its child processes show nothing ran here.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from workbench.analysis.mips.sandbox import (
    Sandbox,
    SandboxError,
    SandboxLimits,
    UnsafeProgramError,
    check_program,
    run_program,
)
from workbench.analysis.mips.verify import verify_program

TIGHT = SandboxLimits(cpu_seconds=1, memory_bytes=1 << 30, wall_seconds=60.0)
# a program that only grows must meet the memory limit long before the CPU limit, on any machine:
# filling 1 GiB by doubling costs about 0.7 CPU seconds here, so TIGHT's 1 s would race it
MEMORY_BOUND = SandboxLimits(cpu_seconds=20, memory_bytes=256 << 20, wall_seconds=60.0)
PROGRAMS = Path(__file__).resolve().parents[3] / "benchmarks" / "mips_programs"

MATCH_ESCAPE = """
def program(xs):
    match 0:
        case int(__class__=c, __reduce_ex__=r):
            return [c, r]
"""

# every route to type.__subclasses__ (and so to any loaded class) we could think of
SUBCLASSES_ROUTES = {
    "attribute": "def program(xs):\n    return int.__subclasses__()\n",
    "class chain": "def program(xs):\n    return ().__class__.__bases__[0].__subclasses__()\n",
    "match keyword pattern": MATCH_ESCAPE,
    "getattr": "def program(xs):\n    return getattr(int, '__subclasses__')()\n",
    "type": "def program(xs):\n    return type(0).__subclasses__()\n",
    "str.format": "def program(xs):\n    return ['{0.__class__.__subclasses__}'.format(0)]\n",
    "f-string": "def program(xs):\n    return [f'{xs.__class__}']\n",
    "__builtins__": "def program(xs):\n    return __builtins__['type'](0).mro()\n",
    "vars": "def program(xs):\n    return vars(int)['__subclasses__'](int)\n",
    "eval": "def program(xs):\n    return eval('int.__subclasses__()')\n",
    "import": "import sys\ndef program(xs):\n    return sys.modules\n",
    "__import__": "def program(xs):\n    return __import__('os').listdir('/')\n",
    "generator frame": "def program(xs):\n    return (x for x in xs).gi_frame.f_globals\n",
    "bound method self": "def program(xs):\n    ys = []\n    return ys.append.__self__\n",
    "lambda": "def program(xs):\n    f = lambda: 0\n    return [f]\n",
    "class statement": "class A:\n    pass\ndef program(xs):\n    return A.__subclasses__()\n",
    "decorator": "def d(f):\n    return f\n@d\ndef program(xs):\n    return xs\n",
    "dunder keyword": "def program(xs):\n    return dict(__class__=1)\n",
    "kwargs unpacking": "def program(xs):\n    return dict(**{'__class__': 1})\n",
    "unicode name": "def program(xs):\n    return int.__ｓubclasses__()\n",  # NFKC-normalised to __subclasses__
    "walrus": "def program(xs):\n    return [(c := x) for x in xs]\n",
    "try/except": "def program(xs):\n    try:\n        1 // 0\n    except Exception as e:\n"
                  "        return e.__traceback__\n",
    "module-level code": "int.__subclasses__()\ndef program(xs):\n    return xs\n",
    "global": "def program(xs):\n    global ys\n    return xs\n",
}
SIDE_EFFECT_COMPREHENSION = "def program(xs):\n    ys = []\n    [ys.append(x) for x in xs]\n    return ys\n"


def children_of_this_process() -> set[str]:
    """Process ids of this process's live children (Linux /proc)."""
    return {pid for f in Path("/proc/self/task").glob("*/children") for pid in f.read_text().split()}


@pytest.fixture
def no_new_children():
    """Asserts the test left no child process behind (others' session fixtures may hold some already)."""
    before = children_of_this_process()
    yield
    assert children_of_this_process() <= before, "a sandbox child was not reaped"


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("route", sorted(SUBCLASSES_ROUTES))
def test_every_route_to_subclasses_fails_the_allow_list_and_starts_nothing(route, no_new_children):
    v = verify_program(SUBCLASSES_ROUTES[route], "Parity_All")
    assert not v.passed and v.reason == "unsafe", v
    assert "allow-list" in v.error or "does not parse" in v.error, v.error


def test_comprehensions_with_side_effects_and_stray_calls_are_refused():
    with pytest.raises(UnsafeProgramError, match="inside a comprehension"):
        check_program(SIDE_EFFECT_COMPREHENSION)
    with pytest.raises(UnsafeProgramError, match="a call of open"):
        check_program("def program(xs):\n    return open('/etc/passwd')\n")
    with pytest.raises(UnsafeProgramError, match="no function `program"):
        check_program("def other(xs):\n    return xs\n")


def test_every_program_the_suite_synthesised_is_on_the_allow_list():
    sources = sorted(PROGRAMS.glob("*.py"))
    assert len(sources) >= 50
    for path in sources:
        check_program(path.read_text())


@pytest.mark.parametrize(
    ("name", "source", "reason"),
    [
        ("infinite loop", "def program(xs):\n    while True:\n        pass\n", "cpu"),
        ("infinite loop at definition", "def f():\n    while True:\n        pass\n    return 0\nX = f()\n"
                                        "def program(xs):\n    return xs\n", "cpu"),
        ("10 GB list", "def program(xs):\n    return [0] * (10 * 1024**3 // 8)\n", "memory"),
        ("10 GB string at definition", "X = 'x' * (10 * 1024**3)\ndef program(xs):\n    return xs\n", "memory"),
        ("growing until memory runs out", "def program(xs):\n    ys = [0]\n    while True:\n"
                                          "        ys = ys + ys\n", "memory"),
        ("fork bomb by import", "import os\ndef program(xs):\n    while True:\n        os.fork()\n", "unsafe"),
        ("recursion bomb", "def program(xs):\n    return program(xs) + program(xs)\n", "exception"),
    ],
    ids=lambda value: value.replace(" ", "_") if " " in str(value) and "\n" not in str(value) else "",
)
def test_hostile_programs_fail_within_the_limits_and_the_caller_is_unharmed(name, source, reason, no_new_children):
    cpu_before, peak_before = own_cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    limits = MEMORY_BOUND if name.startswith("growing") else TIGHT
    v = verify_program(source, "Parity_All", limits=limits)
    assert not v.passed and v.reason in (reason, "wall"), (name, v)
    assert v.error and "FAILED" in v.summary()
    # the program's CPU burn and memory were the child's: this process spent far less than the limit
    assert own_cpu_seconds() - cpu_before < TIGHT.cpu_seconds, name
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 1024**2  # KiB: not 1 GiB more here


def test_the_child_reports_its_confinement():
    source = "def program(xs):\n    return xs\n"
    with Sandbox(source, TIGHT) as box:
        c = box.confinement
        assert box.failure is None
        assert c["descriptors"] == [0, 1, 2] and set(c["environment"]) <= {"LC_CTYPE"}
        assert c["limits"]["RLIMIT_CPU"] == 1 and c["limits"]["RLIMIT_NPROC"] == 0
        assert c["limits"]["RLIMIT_NOFILE"] == 3 and c["limits"]["RLIMIT_FSIZE"] == 0
        assert c["fork_refused"] and c["uid"] != 0


def test_run_program_returns_outputs_as_data_and_raises_on_a_crash():
    add = "def program(xs):\n    ys = []\n    for a, b in xs:\n        ys.append((a + b, a * b))\n    return ys\n"
    assert run_program(add, [[(1, 2), (3, 4)]]) == [[[3, 2], [7, 12]]]
    with pytest.raises(SandboxError, match="ZeroDivisionError"):
        run_program("def program(xs):\n    return [1 // 0]\n", [[1]])


def test_a_wrong_multichannel_program_reports_tuples_as_the_reference_does():
    swapped = ("def program(xs):\n    ys = []\n    for a, b in xs:\n        ys.append((b, a))\n    return ys\n")
    v = verify_program(swapped, "Newton_Magnetic", n_random=5, n_long=1)
    assert not v.passed and v.reason == "mismatch"
    assert isinstance(v.counterexample[0], tuple) and isinstance(v.got[0], tuple) and v.got != v.expected


def test_the_wall_clock_limit_ends_a_child_the_cpu_limit_has_not_yet_stopped(no_new_children):
    v = verify_program("def program(xs):\n    while True:\n        pass\n", "Parity_All",
                       limits=SandboxLimits(cpu_seconds=60, wall_seconds=0.5))
    assert not v.passed and v.reason == "wall" and "wall-clock limit of 0.5 s" in v.error

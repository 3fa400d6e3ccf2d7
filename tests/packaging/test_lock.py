"""Installs come from one lock: requirements/lock.txt pins every package, install.sh uses it by
default, and binder/requirements.txt is generated from the same resolution (tools/write_lock.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK, BINDER = ROOT / "requirements" / "lock.txt", ROOT / "binder" / "requirements.txt"


def load_write_lock():
    spec = importlib.util.spec_from_file_location("write_lock", ROOT / "tools" / "write_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of the `name==version` lines of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def test_install_script_installs_from_the_lock_by_default():
    script = (ROOT / "install.sh").read_text()
    assert "-c requirements/lock.txt" in script and 'WORKBENCH_DEPS:-locked' in script
    assert {"transformers", "torch", "transformer-lens", "kernels"} <= set(pins(LOCK))
    assert "+" not in pins(LOCK)["torch"], "torch is locked without a local label, so CPU and CUDA builds fit"


def test_binder_pins_are_the_lock_pins():
    lock, binder = pins(LOCK), pins(BINDER)
    assert binder, "binder/requirements.txt pins nothing"
    differing = {name: (version, lock.get(name)) for name, version in binder.items()
                 if version.split("+")[0] != lock.get(name)}
    assert differing == {}, f"binder/requirements.txt and the lock disagree: {differing}"
    assert binder["torch"].endswith("+cpu"), "Binder must get the CPU-only torch build"


def test_binder_file_is_what_the_generator_writes_for_this_environment():
    write_lock = load_write_lock()
    dists = write_lock.installed()
    here = {name: write_lock.public_version(dist.version) for name, dist in dists.items()}
    locked = pins(LOCK)
    if any(locked.get(name) != version for name, version in here.items() if name in locked):
        pytest.skip("this environment was not installed from the lock (WORKBENCH_DEPS=newest?)")
    assert BINDER.read_text() == write_lock.binder_text(dists), "run tools/write_lock.py from a locked env"

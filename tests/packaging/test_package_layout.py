"""The package layout: every Python package is found by setuptools' discovery, the top-level kernels/
holds C++ sources only (so it can never shadow PyPI's `kernels`), and the wheel carries those sources."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

from workbench.kernels.cpu_compiled import KERNEL_HEADERS, KERNEL_SOURCES

ROOT = Path(__file__).resolve().parents[2]


def test_every_directory_with_python_modules_is_a_discovered_package():
    discovered = set(find_packages(str(ROOT), include=["workbench*"]))
    with_modules = {
        ".".join(directory.relative_to(ROOT).parts)
        for directory in {module.parent for module in (ROOT / "workbench").rglob("*.py")}
        if "__pycache__" not in directory.parts
    }
    assert with_modules - discovered == set(), f"add an __init__.py to: {sorted(with_modules - discovered)}"
    assert "workbench.kernels" in discovered


def test_top_level_kernels_folder_holds_no_python():
    python_files = sorted(p.name for p in (ROOT / "kernels").rglob("*.py"))
    assert python_files == [], f"kernels/ must hold no Python module (it would shadow PyPI's `kernels`): {python_files}"
    assert {p.name for p in (ROOT / "kernels").iterdir()} >= set(KERNEL_SOURCES + KERNEL_HEADERS)


def test_import_kernels_from_repository_root_is_never_the_repository_folder():
    """transformers imports PyPI's `kernels`; from the repository root it must still be that package."""
    pytest.importorskip("kernels")
    probe = "import kernels, sys; print(getattr(kernels, '__file__', None)); print(list(kernels.__path__))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert str(ROOT / "kernels") not in out, out
    assert "site-packages" in out.splitlines()[0], out


@pytest.mark.slow
def test_wheel_carries_the_kernel_sources_and_no_top_level_kernels(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("recurrent_workbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"workbench/kernels/csrc/{name}" for name in KERNEL_SOURCES + KERNEL_HEADERS} <= set(names)
    assert not [name for name in names if name.startswith("kernels/")], "the wheel must not install a top-level kernels"
    assert "workbench/kernels/cpu_compiled.py" in names

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
def test_wheel_carries_the_kernel_sources_and_notebooks_and_no_top_level_kernels(tmp_path):
    names = zipfile.ZipFile(_wheel(tmp_path)).namelist()
    assert {f"workbench/kernels/csrc/{name}" for name in KERNEL_SOURCES + KERNEL_HEADERS} <= set(names)
    assert not [name for name in names if name.startswith("kernels/")], "the wheel must not install a top-level kernels"
    assert "workbench/kernels/cpu_compiled.py" in names and "workbench/notebooks/00_tour.ipynb" in names


def _wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(ROOT)], check=True, capture_output=True, cwd=out)
    (wheel,) = out.glob("recurrent_workbench-*.whl")
    return wheel


@pytest.mark.slow
def test_installed_wheel_with_no_clone_beside_it_builds_the_kernels_and_runs_the_tour(tmp_path):
    """The wheel in a fresh venv (its dependencies borrowed from this environment through a .pth
    file), run from an empty folder: the kernels build from the wheel's own sources and the tour runs."""
    import site
    import sysconfig

    wheel = _wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    dependencies = sysconfig.get_paths()["purelib"] if not site.ENABLE_USER_SITE else site.getsitepackages()[0]
    (Path(purelib) / "borrowed_dependencies.pth").write_text(dependencies + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    subprocess.run([str(python), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
                   check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    # Jupyter data files (nbconvert's templates) are borrowed too; the new venv's kernel spec comes first.
    jupyter_path = f"{venv / 'share' / 'jupyter'}:{Path(sys.prefix) / 'share' / 'jupyter'}"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "JUPYTER_PATH": jupyter_path,
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}  # a cold build, from the wheel's sources
    probe = ("import workbench, workbench.kernels.cpu_compiled as c; "
             "print(workbench.__file__); print(c.kernel_source_dir()); print(c.compiled_kernels_available())")
    facts = subprocess.run([str(python), "-c", probe], cwd=work, env=env, capture_output=True, text=True,
                           timeout=900).stdout.split()
    assert len(facts) == 3, facts
    assert Path(facts[0]).is_relative_to(venv) and Path(facts[1]) == Path(facts[0]).parent / "kernels" / "csrc"
    assert facts[2] == "True", "the compiled kernels did not build from the installed wheel"
    tour = subprocess.run([str(venv / "bin" / "workbench"), "tour", "--out", str(work / "tour")], cwd=work,
                          env=env, capture_output=True, text=True, timeout=900)
    assert tour.returncode == 0, tour.stderr[-3000:]
    assert (work / "tour" / "00_tour.ipynb").is_file() and "tour ran in" in tour.stdout

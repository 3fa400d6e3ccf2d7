"""Ships what lives outside the package folder inside the wheel: the compiled kernels' C++ sources
(the repository's top-level kernels/) as workbench/kernels/csrc/, where workbench.kernels.cpu_compiled
builds them from on first use, and the notebooks as workbench/notebooks/, so `workbench tour` runs
from an installed wheel with no clone beside it. Everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# (folder in the repository, file suffixes, folder inside the built package)
SHIPPED_FOLDERS = [
    ("kernels", (".cpp", ".h"), Path("workbench", "kernels", "csrc")),
    ("notebooks", (".ipynb",), Path("workbench", "notebooks")),
]


class BuildPyWithSources(build_py):
    """build_py that also copies the SHIPPED_FOLDERS' files into the built package."""

    def run(self) -> None:
        super().run()
        for folder, suffixes, target in SHIPPED_FOLDERS:
            target_dir = Path(self.build_lib) / target
            target_dir.mkdir(parents=True, exist_ok=True)
            for source in sorted((ROOT / folder).iterdir()):
                if source.suffix in suffixes:
                    self.copy_file(str(source), str(target_dir / source.name))


setup(cmdclass={"build_py": BuildPyWithSources})

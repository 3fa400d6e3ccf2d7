"""Ships the compiled kernels' C++ sources (the repository's top-level kernels/) inside the wheel as
workbench/kernels/csrc/, where workbench.kernels.cpu_compiled builds them from on first use.
Everything else about the package is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNEL_SOURCE_SUFFIXES = (".cpp", ".h")


class BuildPyWithKernelSources(build_py):
    """build_py that also copies kernels/*.cpp and kernels/*.h into the built workbench.kernels."""

    def run(self) -> None:
        super().run()
        source_dir = Path(__file__).resolve().parent / "kernels"
        target_dir = Path(self.build_lib) / "workbench" / "kernels" / "csrc"
        target_dir.mkdir(parents=True, exist_ok=True)
        for source in sorted(source_dir.iterdir()):
            if source.suffix in KERNEL_SOURCE_SUFFIXES:
                self.copy_file(str(source), str(target_dir / source.name))


setup(cmdclass={"build_py": BuildPyWithKernelSources})

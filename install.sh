#!/usr/bin/env bash
# Create .venv and install the workbench with its test tools. CPU build of PyTorch where no GPU is
# present (an unpinned `torch` would pull a CUDA build of several GB). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        $PIP install --quiet "torch==${TORCH_VERSION}"
    elif ls ${PIP_FIND_LINKS:-/nonexistent}/torch-"${TORCH_VERSION}"+cpu* >/dev/null 2>&1; then
        $PIP install --quiet "torch==${TORCH_VERSION}"          # the CPU build on this disk
    else
        $PIP install --quiet "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
            || $PIP install --quiet "torch==${TORCH_VERSION}"
    fi
fi
$PIP install --quiet -e ".[test]"
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
# Build the compiled CPU kernels once here (about 30 s, cached), not inside a timed notebook cell.
.venv/bin/python -c "from workbench.kernels.cpu_compiled import compiled_kernels_available as built; built()"
echo "installed: $(.venv/bin/python -c 'import torch, workbench; print("workbench", workbench.__version__, "torch", torch.__version__)')"

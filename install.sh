#!/usr/bin/env bash
# Create a virtual environment (.venv, or $VENV) and install the workbench with its test tools.
#   bash install.sh                          the versions in requirements/lock.txt (tested together)
#   WORKBENCH_DEPS=newest bash install.sh    the newest releases instead (tools/check_newest.sh)
#   WORKBENCH_ENV=sae VENV=.venv-sae bash install.sh
#                                            the second environment: the [sae] extra (transformer-lens 3.x
#                                            with sae-lens, which pins transformer-lens below 4), from
#                                            requirements/lock-sae.txt; the main one stays on 4.x
# CPU build of PyTorch where no GPU is present (an unpinned `torch` would pull a CUDA build of
# several GB). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
case "${WORKBENCH_DEPS:-locked}" in
    locked) CONSTRAINTS=(-c requirements/lock.txt) ;;
    newest) CONSTRAINTS=() ;;
    *) echo "WORKBENCH_DEPS must be 'locked' or 'newest', not '${WORKBENCH_DEPS}'" >&2; exit 2 ;;
esac
case "${WORKBENCH_ENV:-main}" in
    main) EXTRAS="test" ;;
    sae) EXTRAS="test,sae"
         [ ${#CONSTRAINTS[@]} -eq 0 ] || CONSTRAINTS=(-c requirements/lock-sae.txt) ;;
    *) echo "WORKBENCH_ENV must be 'main' or 'sae', not '${WORKBENCH_ENV}'" >&2; exit 2 ;;
esac
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        $PIP install --quiet "torch==${TORCH_VERSION}"
    elif ls ${PIP_FIND_LINKS:-/nonexistent}/torch-"${TORCH_VERSION}"+cpu* >/dev/null 2>&1; then
        $PIP install --quiet "torch==${TORCH_VERSION}"          # the CPU build on this disk
    else
        $PIP install --quiet "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
            || $PIP install --quiet "torch==${TORCH_VERSION}"
    fi
fi
$PIP install --quiet ${CONSTRAINTS[@]+"${CONSTRAINTS[@]}"} -e ".[${EXTRAS}]"
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
# Build the compiled CPU kernels once here (about a minute, cached), not inside a timed notebook cell.
"$VENV/bin/python" -c "from workbench.kernels.cpu_compiled import compiled_kernels_available as built; built()"
echo "installed: $("$VENV/bin/python" -c 'import torch, transformers, workbench; print("workbench", workbench.__version__, "torch", torch.__version__, "transformers", transformers.__version__)')"

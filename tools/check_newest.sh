#!/usr/bin/env bash
# Compatibility with the newest releases: resolve them afresh in a scratch virtual environment (not
# the lock) and run a fast subset of the tests there: packaging, kernels, models, adapters against
# transformers, and the tour notebook; then packaging, models and sae in the [sae] extra's environment.
# Exit status is the tests'. Not part of .ci/run: a new release that breaks us should be seen here, not
# block every submission.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
VENV="$scratch/venv" WORKBENCH_DEPS=newest bash install.sh
"$scratch/venv/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -i -E '^(torch|transformers|transformer-lens|kernels|jupyterlab|numpy)==' || true
"$scratch/venv/bin/python" -m pytest -n 2 -q -p no:cacheprovider \
    tests/packaging tests/kernels tests/models tests/adapters "tests/notebooks/test_notebooks.py::test_notebook_runs_without_error[00_tour]" "$@"
# The [sae] extra's environment resolved afresh too: the newest sae-lens with the newest
# transformer-lens it allows (3.x), on the tests that touch TransformerLens and SAELens.
VENV="$scratch/venv-sae" WORKBENCH_ENV=sae WORKBENCH_DEPS=newest bash install.sh
"$scratch/venv-sae/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -i -E '^(torch|transformers|transformer-lens|sae-lens)==' || true
"$scratch/venv-sae/bin/python" -m pytest -n 2 -q -p no:cacheprovider tests/packaging tests/models tests/sae "$@"

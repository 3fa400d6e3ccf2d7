#!/usr/bin/env bash
# Resolve the newest releases in a scratch virtual environment and write requirements/lock.txt and
# binder/requirements.txt from it (tools/write_lock.py). Run tools/check_newest.sh or the suite
# against the result before committing a new lock.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
VENV="$scratch/venv" WORKBENCH_DEPS=newest bash install.sh
"$scratch/venv/bin/python" tools/write_lock.py

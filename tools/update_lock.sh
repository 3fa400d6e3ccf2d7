#!/usr/bin/env bash
# Resolve the newest releases in a scratch virtual environment and write requirements/lock.txt and
# binder/requirements.txt from it (tools/write_lock.py); WORKBENCH_ENV=sae: the [sae] extra's
# environment, written to requirements/lock-sae.txt. Run tools/check_newest.sh or the suite
# against the result before committing a new lock.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
VENV="$scratch/venv" WORKBENCH_DEPS=newest bash install.sh
if [ "${WORKBENCH_ENV:-main}" = sae ]; then
    "$scratch/venv/bin/python" tools/write_lock.py --sae      # requirements/lock-sae.txt only
else
    "$scratch/venv/bin/python" tools/write_lock.py
fi

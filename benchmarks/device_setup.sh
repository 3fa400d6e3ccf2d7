#!/usr/bin/env bash
# Set up the workbench on a bare CUDA machine with no network: wheels carried in .whl/ (the
# dependencies its image lacks) and the corpora carried in .corpus/ (see train_embedded_gpu.sh).
# Source it: `. benchmarks/device_setup.sh`; it exports PYTHONPATH and CORPORA.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target /tmp/site .
export PYTHONPATH=/tmp/site
export CORPORA=/tmp/corpora
mkdir -p "$CORPORA"
for archive in .corpus/*.tar.xz; do [ -e "$archive" ] && tar -C "$CORPORA" -xJf "$archive"; done

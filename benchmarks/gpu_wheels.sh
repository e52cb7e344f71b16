#!/usr/bin/env bash
# The wheels the device machine lacks (it reaches no package registry), made here into .whl/
# for `make bench-gpu` there (benchmarks/gpu.sh): hydra-core, omegaconf and antlr4's runtime,
# all pure Python, at the versions this checkout's venv holds. About 0.4 MB.
set -euo pipefail
PY=${PY:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
for name in hydra-core omegaconf antlr4-python3-runtime; do
    version=$($PY -m pip show "$name" | awk '/^Version:/ {print $2}')
    $PY -m pip wheel -q --no-deps -w .whl "$name==$version"
done
ls -l .whl

# Sourced by the benchmark scripts: run from the repository root with the project's venv, the
# local data directory beside the checkout, no hub access, and $THREADS torch threads (default 1,
# so two benchmarks can share the 2-core machine).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
export DMX_DATA_DIR=${DMX_DATA_DIR:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${THREADS:-1}

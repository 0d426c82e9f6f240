#!/bin/sh
# `make test`: the whole suite, in two pytest processes side by side so a 2-core machine is used fully.
# The tests that drive other processes mostly single-threaded (crash and resume with PREFBENCH_THREADS=1,
# determinism, a Ray cluster, two torchrun ranks) and the real-model suite go in a process of their own
# beside everything else (measured on 2 cores: one pytest alone kept 1.2 cores busy over 31 minutes;
# split without the real-model suite, the halves took 13 and 25 minutes). Each half's output is printed
# in full, in turn; the exit status is the first failing half's. Extra pytest arguments run one pytest.
# Each half computes on one thread (OMP_NUM_THREADS=1, inherited by every process it starts, unless
# set already): two halves with two OpenMP threads each on 2 cores oversubscribe them, and OpenMP's
# waiting threads then cost more than the second thread gains (measured: two HF samplers side by side
# took 48 s each with two threads, 16 s each with one; either alone took 11 s with two).
# Usage: tests/run_suite.sh PYTHON [PYTEST_ARGS...]
PY=$1
shift
if [ $# -gt 0 ]; then
  exec "$PY" -m pytest -q "$@"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
SIDE="tests/test_reliability.py tests/test_determinism.py tests/test_ray.py tests/test_accelerate.py tests/test_instruct_suite.py"
# shellcheck disable=SC2086
"$PY" -m pytest -q -p no:cacheprovider $SIDE >"$log" 2>&1 &
side=$!
# shellcheck disable=SC2086
"$PY" -m pytest -q $(for f in $SIDE; do printf -- '--ignore=%s ' "$f"; done)
main=$?
wait "$side"
rel=$?
echo "---- $SIDE (run alongside) ----"
cat "$log"
[ "$main" -ne 0 ] && exit "$main"
exit "$rel"

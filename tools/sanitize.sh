#!/usr/bin/env bash
# Build adamc with AddressSanitizer + UndefinedBehaviorSanitizer and run the
# whole test suite against that build; any sanitizer report fails the run.
#
#   bash tools/sanitize.sh [extra pytest args]
#
# Python itself is not built with ASan, so the runtime is preloaded
# (LD_PRELOAD), and leak detection is off: CPython keeps objects alive at
# exit by design, which LeakSanitizer would report.  The RSS-based leak tests
# skip themselves under ADAMC_SANITIZE (ASan's quarantine grows RSS).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PY=${PYTHON:-python3}

"$PY" -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q --upgrade "numpy>=2" "Cython>=3" "setuptools>=77" wheel pytest threadpoolctl hypothesis ml_dtypes
cp -r "$repo" "$work/src"
rm -rf "$work/src/build" "$work/src/src/adamc/"*.so "$work/src/src/adamc/_kernels.c"
export ADAMC_SANITIZE=address,undefined
python -m pip install -q --no-build-isolation "$work/src"

libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$work"   # import the sanitized install, not the checkout
status=0
LD_PRELOAD="$libasan $libubsan" python -m pytest "$repo/tests" -q -p no:cacheprovider "$@" \
    2>&1 | tee "$work/log" || status=$?
if grep -qE "ERROR: AddressSanitizer|runtime error:" "$work/log"; then
    echo "sanitize.sh: sanitizer reports found" >&2
    status=1
fi
echo "sanitize.sh: exit $status"
exit $status

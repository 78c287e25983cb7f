#!/usr/bin/env bash
# What a user installs is what CI tests (issue 39): build the sdist and the wheel (the wheel
# from the sdist), check them, then for every Python the wheel declares install the *wheel*
# (not the source tree) with its [serve] extra and constraints.txt into a fresh virtual
# environment and run scripts/wheel_smoke.py there, from a temporary directory outside the
# repository.
#
#   scripts/wheel_smoke.sh              # every declared Python
#   scripts/wheel_smoke.sh 3.12 3.13    # only these (each must be declared)
#
# The Pythons come from the wheel's metadata (setup.py's classifiers, which must name exactly
# the versions that python_requires admits). An interpreter is found as pythonX.Y on PATH or
# with `pyenv prefix X.Y`; a declared version without one fails. Every step prints
# `[python X.Y] step: ...`; a failure ends with `FAILED on Python X.Y at step ...` and a
# non-zero exit.
#
# Environment: HOST_PYTHON (the Python with `build` and `twine`; default .venv/bin/python),
# SMOKE_DIR (default build/wheel-smoke), SMOKE_KEEP=1 keeps each environment after it passed
# (by default it is removed: with a CUDA build of torch one takes about 6 GB). Downloads go
# through pip's usual cache, shared by all the environments and kept between runs.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HOST_PYTHON=${HOST_PYTHON:-$ROOT/.venv/bin/python}
SMOKE_DIR=${SMOKE_DIR:-$ROOT/build/wheel-smoke}
DIST=$SMOKE_DIR/dist
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV

HOST_VERSION=$("$HOST_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || {
    echo "FAILED on the build host at step find HOST_PYTHON ($HOST_PYTHON; run make setup)" >&2; exit 1; }
CURRENT_PY="$HOST_VERSION (the build)"
CURRENT_STEP=start
TIMINGS=()

STEP_T0=$(date +%s)
step() {  # step NAME: announce a step and remember it for the failure line
    CURRENT_STEP=$1
    echo "[python $CURRENT_PY] step: $1 (at $(( $(date +%s) - STEP_T0 )) s)"
}
fail() {
    [ $# -gt 0 ] && echo "$*" >&2
    echo "FAILED on Python $CURRENT_PY at step $CURRENT_STEP" >&2
    exit 1
}
seconds() { echo $(( $(date +%s) - $1 )); }

# --- build once and check -----------------------------------------------------------------
t0=$(date +%s)
step "python -m build (sdist, then the wheel from the sdist)"
rm -rf "$DIST"
mkdir -p "$SMOKE_DIR"
"$HOST_PYTHON" -m build --outdir "$DIST" . > "$SMOKE_DIR/build.log" 2>&1 || { cat "$SMOKE_DIR/build.log"; fail; }
shopt -s nullglob
wheels=("$DIST"/*.whl)
sdists=("$DIST"/*.tar.gz)
shopt -u nullglob
[ ${#wheels[@]} -eq 1 ] && [ ${#sdists[@]} -eq 1 ] || fail "expected one wheel and one sdist in $DIST"
WHEEL=${wheels[0]}
echo "  built $(basename "$WHEEL") and $(basename "${sdists[0]}")"

step "twine check --strict"
COLUMNS=200 "$HOST_PYTHON" -m twine --no-color check --strict "$WHEEL" "${sdists[0]}" || fail

step "contents: every file of the source package is in the wheel and the sdist"
"$HOST_PYTHON" - "$WHEEL" "${sdists[0]}" <<'EOF' || fail
import sys, tarfile, zipfile
from pathlib import Path
wheel, sdist = sys.argv[1:]
source = {p.as_posix() for p in Path("spacy_hybridner").rglob("*")
          if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")}
in_wheel = set(zipfile.ZipFile(wheel).namelist())
with tarfile.open(sdist) as tar:
    in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
missing = {"wheel": sorted(source - in_wheel), "sdist": sorted(source - in_sdist)}
for where, files in missing.items():
    if files:
        print(f"  missing from the {where}: " + ", ".join(files), file=sys.stderr)
if any(missing.values()):
    sys.exit(1)
print(f"  {len(source)} files of spacy_hybridner/ in both")
EOF

step "declared Pythons: the wheel's Requires-Python and classifiers agree"
declared=$("$HOST_PYTHON" - "$WHEEL" <<'EOF'
import re, sys, zipfile
from packaging.specifiers import SpecifierSet
with zipfile.ZipFile(sys.argv[1]) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    meta = whl.read(name).decode("utf8")
requires = re.search(r"^Requires-Python: (.+)$", meta, re.M)
classified = sorted({m for m in re.findall(r"^Classifier: Programming Language :: Python :: (3\.\d+)$", meta, re.M)},
                    key=lambda v: int(v.split(".")[1]))
if not requires or not classified:
    sys.exit("the wheel declares no Requires-Python or no 'Programming Language :: Python :: 3.X' classifier")
admitted = [f"3.{m}" for m in range(0, 40) if SpecifierSet(requires.group(1)).contains(f"3.{m}.0")]
if admitted != classified:
    sys.exit(f"Requires-Python {requires.group(1)} admits {admitted}, the classifiers name {classified}")
print(" ".join(classified))
EOF
) || fail
echo "  declared: $declared"
VERSION=$(basename "$WHEEL" | cut -d- -f2)
TIMINGS+=("build and checks: $(seconds "$t0") s")

if [ $# -gt 0 ]; then
    for v in "$@"; do
        [[ " $declared " == *" $v "* ]] || fail "Python $v is not declared (declared: $declared)"
    done
    versions="$*"
else
    # the build host's Python first (its torch may come from a local file: the quickest
    # environment, so a broken package fails before the large downloads of the others)
    versions="$HOST_VERSION"
    for v in $declared; do [ "$v" = "$HOST_VERSION" ] || versions="$versions $v"; done
    [[ " $declared " == *" $HOST_VERSION "* ]] || versions=$declared
fi

find_python() {  # find_python X.Y: print an interpreter of that version, or nothing
    local v=$1 candidate pyenv prefix candidates=("python$v")
    pyenv=$(command -v pyenv || echo "${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv")
    if [ -x "$pyenv" ] && prefix=$("$pyenv" prefix "$v" 2>/dev/null); then
        candidates+=("$prefix/bin/python$v")
    fi
    for candidate in "${candidates[@]}"; do  # (a pyenv shim of a version not selected fails here)
        if "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$v'.split('.'))))" \
                2>/dev/null; then
            "$candidate" -c 'import sys; print(sys.executable)'
            return
        fi
    done
}

# --- one fresh environment per Python -----------------------------------------------------
for v in $versions; do
    CURRENT_PY=$v
    t0=$(date +%s)
    STEP_T0=$t0
    step "find an interpreter"
    python=$(find_python "$v")
    [ -n "$python" ] || fail "no Python $v: neither python$v on PATH nor \`pyenv prefix $v\`"
    echo "  $python"

    step "fresh virtual environment"
    venv=$SMOKE_DIR/py$v
    rm -rf "$venv"
    "$python" -m venv "$venv" || fail
    "$venv/bin/python" -m pip install -qq --upgrade pip || fail

    step "pip install the wheel [serve] with constraints.txt, wheels only"
    "$venv/bin/python" -m pip install -qq --only-binary=:all: -c "$ROOT/constraints.txt" "$WHEEL[serve]" || fail
    step "pip check"
    "$venv/bin/python" -m pip check || fail
    step "every extra resolves to wheels (pip install --dry-run [serve,ray,report,tensorboard])"
    # seqeval ([report]) is published as an sdist only
    "$venv/bin/python" -m pip install -qq --dry-run --only-binary=:all: --no-binary=seqeval \
        -c "$ROOT/constraints.txt" "$WHEEL[serve,ray,report,tensorboard]" || fail
    t_install=$(seconds "$t0")

    t1=$(date +%s)
    work=$(mktemp -d "${TMPDIR:-/tmp}/spacy-hybridner-smoke-$v.XXXXXX")
    cp "$ROOT/scripts/wheel_smoke.py" "$ROOT/configs/hybrid_cpu.cfg" "$work/"
    CURRENT_STEP="smoke suite"
    (cd "$work" && "$venv/bin/python" -I wheel_smoke.py --config hybrid_cpu.cfg --version "$VERSION")
    rc=$?
    if [ $rc -ne 0 ]; then
        [ -f "$work/.step" ] && CURRENT_STEP="$(cat "$work/.step")"
        echo "  its files: $work; the environment: $venv" >&2
        # wheel_smoke.py prints the FAILED line itself when it exits with 1
        [ $rc -eq 1 ] && exit 1
        fail "wheel_smoke.py exited with $rc"
    fi
    t_smoke=$(seconds "$t1")
    t1=$(date +%s)
    rm -rf "$work"
    [ "${SMOKE_KEEP:-0}" = 1 ] || rm -rf "$venv"
    TIMINGS+=("Python $v: environment and install $t_install s, smoke suite $t_smoke s, clean-up $(seconds "$t1") s")
done

echo "wheel smoke passed on Python $versions"
printf '  %s\n' "${TIMINGS[@]}"

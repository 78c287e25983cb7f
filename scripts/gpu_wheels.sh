#!/usr/bin/env bash
# Prepares, here (network to the package registry, the project's .venv), the two folders
# that scripts/gpu_check.sh needs on a GPU machine that has Python 3.12, torch with CUDA,
# cupy, numpy, typer, pytest... but no spaCy and no network:
#   .whl/      cp312 manylinux x86_64 wheels of spaCy, thinc and each of their requirements
#              that the GPU machine lacks, at the versions installed in this project's
#              .venv, with the debug sections stripped from their extension modules
#              (scripts/gpu_wheel_tools.py) so that tree + wheels + data stay under the
#              64 MiB that travels;
#   .gpudata/  CoNLL-2003 converted to .spacy (train, dev = testa, test = testb).
# Both are git-ignored (.gitignore): never commit them (the CoNLL-2003 text is Reuters',
# for research use only). Run from anywhere; it works in the repository root:
#   scripts/gpu_wheels.sh
#   PYTHON=/path/to/python CONLL03_DIR=/path/to/conll2003 scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
CONLL03_DIR=${CONLL03_DIR:-../shared/data/conll2003}
WHEELS=.whl
DATA=.gpudata
MAX_MIB=${MAX_MIB:-45}  # wheels + data; the tree is a few MiB more, the limit is 64

if [ ! -x "$PYTHON" ]; then
  echo "gpu_wheels: no Python at $PYTHON: run 'make setup' first or set PYTHON=..." >&2
  exit 1
fi
for path in "$WHEELS" "$DATA"; do
  if ! git check-ignore -q "$path/x"; then
    echo "gpu_wheels: $path is not git-ignored: add /$path/ to .gitignore first." >&2
    exit 1
  fi
done

# What spaCy 3.8 and thinc 8.3 need (Requires-Dist, followed down) less what the GPU
# machine has (the device tool's list of kinds says): typer, click, numpy, requests,
# jinja2, packaging, tqdm, setuptools, httpx, wrapt, rich, shellingham, annotated-doc.
# typing-extensions travels too: pydantic 2.14 needs >= 4.16, which the machine may lack.
PACKAGES=(
  spacy thinc blis cymem preshed murmurhash srsly wasabi catalogue confection weasel
  spacy-legacy spacy-loggers cloudpathlib smart-open
  pydantic pydantic-core annotated-types typing-inspection typing-extensions
)
ON_GPU_MACHINE=(
  typer click numpy requests jinja2 packaging tqdm setuptools wheel httpx wrapt rich
  shellingham annotated-doc markupsafe urllib3 idna certifi charset-normalizer
)

# The exact versions of this project's environment.
mapfile -t PINS < <("$PYTHON" - "${PACKAGES[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"gpu_wheels: {name} is not installed in this Python: run 'make setup' first.")
EOF
)
echo "gpu_wheels: ${PINS[*]}"

rm -rf "$WHEELS"
mkdir -p "$WHEELS"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$WHEELS" "${PINS[@]}"
"$PYTHON" scripts/gpu_wheel_tools.py strip "$WHEELS"/*.whl
"$PYTHON" scripts/gpu_wheel_tools.py check "$WHEELS" "${ON_GPU_MACHINE[@]}"

# CoNLL-2003 as .spacy files: the GPU machine does not see ../shared.
for f in eng.train eng.testa eng.testb; do
  if [ ! -f "$CONLL03_DIR/$f" ]; then
    echo "gpu_wheels: $CONLL03_DIR/$f not found: set CONLL03_DIR to the folder with eng.train, eng.testa, eng.testb." >&2
    exit 1
  fi
done
rm -rf "$DATA"
"$PYTHON" -m spacy_hybridner convert conll03 "$CONLL03_DIR" "$DATA/conll03"

ls -l "$WHEELS" "$DATA/conll03"
total_kib=$(du -sk "$WHEELS" "$DATA" | awk '{s += $1} END {print s}')
# What else travels: tracked files and untracked ones that git does not ignore.
tree_kib=$(git ls-files -z --cached --others --exclude-standard | "$PYTHON" -c '
import os, sys
names = [n for n in sys.stdin.buffer.read().decode().split("\0") if n and os.path.isfile(n)]
print(sum(os.path.getsize(n) for n in names) // 1024)')
echo "gpu_wheels: $(ls "$WHEELS" | wc -l) wheels; wheels + data $((total_kib / 1024)) MiB (limit here $MAX_MIB MiB);" \
  "with the tree $(((total_kib + tree_kib) / 1024)) MiB of the 64 MiB that travel"
if [ "$total_kib" -gt $((MAX_MIB * 1024)) ] || [ $((total_kib + tree_kib)) -gt $((60 * 1024)) ]; then
  echo "gpu_wheels: too large to travel: the tree, .whl and .gpudata must stay under 64 MiB." >&2
  exit 1
fi

#!/usr/bin/env bash
# The GPU check of issue 16, run ON a GPU machine from the repository root: installs the
# wheels brought along (.whl/, made by scripts/gpu_wheels.sh) and this package, prints
# what the machine has, runs tests/test_gpu.py (and the CPU tests of the CRF, encoder and
# character CNN), trains configs/hybrid_gpu.cfg and spaCy's ner (configs/spacy_ner.cfg)
# on the CoNLL-2003 brought along (.gpudata/) with the same wall-time budget through
# `python -m spacy_hybridner benchmark` (spacy train, spacy evaluate on the test split,
# spacy benchmark speed, all --gpu-id), and writes to $OUT (else gpu_results/):
#   log.txt            everything printed
#   summary.json       versions, each phase's exit code and seconds, pytest counts, the
#                      benchmark rows (test F, words/s, time to best dev F, peak GPU memory
#                      in training), peak GPU memory of nlp.pipe, GPU-vs-CPU agreement
#   benchmarks.md      the benchmark's docs/benchmarks.md section
#   pytest.xml         the test results
#   hybrid_gpu.log.jsonl, spacy_ner.log.jsonl   the training logs (dev F against seconds)
# A failed phase is recorded and the later ones still run; the exit code is 1 if any failed.
# Planned for about 8 minutes on an H200 (install and versions 0.5, tests 1.5, two trainings
# of at most 1.5 plus about 1.5 each for start-up, evaluation and one speed run, summary
# 0.5): each training's budget shrinks so that everything ends by DEADLINE_S (480 s).
#
# Before the device call, in the checkout that the device tool sends (tree + wheels + data
# must stay under 64 MiB; gpu_wheels.sh prints the size):
#   scripts/gpu_wheels.sh
# The device call:
#   command:   bash scripts/gpu_check.sh
#   carry:     [".whl", ".gpudata"]
#   timeout_s: 540
# A rerun of some phases only, e.g. after a fix: PHASES="install tests summary" bash scripts/gpu_check.sh
#
# Rehearsal on a CPU (no install: the environment has it all; tiny data and budget; about
# 6 minutes on 2 cores, a shorter budget may stop hybrid_gpu before its first evaluation):
#   .venv/bin/python -m spacy_hybridner convert conll03 ../shared/data/conll2003 /tmp/tiny03 --limit 20
#   GPU_ID=-1 INSTALL=0 PYTHON=.venv/bin/python DATA=/tmp/tiny03 BUDGET_MIN=1.0 SPEED_BATCH_SIZE=2 DEADLINE_S=900 \
#     EXTRA_OVERRIDES="--training.eval_frequency 5" OUT=/tmp/gpu_rehearsal scripts/gpu_check.sh
set -uo pipefail  # no -e: phases fail on their own and the summary is still written
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

GPU_ID=${GPU_ID:-0}
PYTHON=${PYTHON:-python3}
INSTALL=${INSTALL:-1}              # 0: use the packages of $PYTHON as they are
SITE=${SITE:-/tmp/site}            # where the wheels and this package are installed
DATA=${DATA:-.gpudata/conll03}     # train.spacy, dev.spacy, test.spacy
CORPUS=${CORPUS:-conll03-gpu}      # the benchmark's section title
BUDGET_MIN=${BUDGET_MIN:-1.5}      # wall-time budget of each training, at most
SPEED_BATCH_SIZE=${SPEED_BATCH_SIZE:-32}
SPEED_REPEATS=${SPEED_REPEATS:-1}
EXTRA_OVERRIDES=${EXTRA_OVERRIDES:-}
DEADLINE_S=${DEADLINE_S:-480}      # the whole script; a phase that would pass it is cut or skipped
PHASES=${PHASES:-install versions tests bench summary}
RESULTS=${OUT:-gpu_results}
WORK=${WORK:-/tmp/gpu_check}

mkdir -p "$RESULTS" "$WORK"
exec > >(tee -a "$RESULTS/log.txt") 2>&1
TEE_PID=$!
trap 'exec >&- 2>&-; wait "$TEE_PID"' EXIT  # log.txt complete before the results are collected
START=$(date +%s)
STATUS="$WORK/phases.tsv"
: >"$STATUS"
FAILED=0
echo "== gpu_check: GPU_ID=$GPU_ID BUDGET_MIN=$BUDGET_MIN DATA=$DATA PHASES='$PHASES' RESULTS=$RESULTS $(date -u)"

elapsed() { echo $(($(date +%s) - START)); }
wanted() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# run_phase NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, cut to what is left of
# DEADLINE_S, and records its exit code and seconds.
run_phase() {
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE_S - $(elapsed)))
  if [ "$left" -lt 15 ]; then
    echo "== $name: skipped, ${left}s left of DEADLINE_S=$DEADLINE_S"
    printf '%s\tskipped\t0\n' "$name" >>"$STATUS"
    FAILED=1
    return 1
  fi
  if [ "$limit" -gt "$left" ]; then limit=$left; fi
  echo "== $name (at $(elapsed)s, at most ${limit}s): $*"
  local t0 rc
  t0=$(date +%s)
  timeout --signal=INT --kill-after=20 "$limit" "$@"
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$STATUS"
  echo "== $name: exit $rc after $(($(date +%s) - t0))s"
  if [ "$rc" -ne 0 ]; then FAILED=1; fi
  return "$rc"
}

if [ "$INSTALL" = 1 ]; then
  if wanted install; then
    ls .whl/*.whl >/dev/null 2>&1 || echo "== install: no .whl/*.whl here: run scripts/gpu_wheels.sh and carry .whl"
    run_phase install 180 bash -c "$PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target '$SITE' .whl/*.whl && $PYTHON -m pip install -q --no-index --no-deps --no-build-isolation \
      --no-compile --no-cache-dir --upgrade --target '$SITE' ."
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

if wanted versions; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "(no nvidia-smi)"
  run_phase versions 120 "$PYTHON" scripts/gpu_report.py versions --gpu-id "$GPU_ID" --output "$WORK/versions.json"
fi

if wanted tests; then
  # With the CPU tests of the parts that test_gpu.py runs on CUDA, under the machine's torch;
  # not the wheel tools' tests (they need binutils, and belong to the machine that prepares).
  run_phase tests 240 "$PYTHON" -m pytest tests/test_gpu.py tests/test_gpu_helpers.py tests/test_crf.py \
    tests/test_encoder.py tests/test_char_cnn.py -k "not wheel" -v -rs -p no:cacheprovider \
    --junitxml "$RESULTS/pytest.xml"
fi

if wanted bench; then
  # Each training gets BUDGET_MIN, or less so that both trainings, their start-up,
  # evaluation and speed runs (about 90 s each) and the summary (60 s) end by DEADLINE_S.
  left=$((DEADLINE_S - $(elapsed) - 60))
  budget=$(awk -v b="$BUDGET_MIN" -v l="$left" 'BEGIN { m = (l / 2 - 90) / 60; if (m < b) b = m; printf "%.2f", b }')
  if awk -v b="$budget" 'BEGIN { exit !(b < 0.25) }'; then
    echo "== bench: skipped, only ${left}s left for two trainings"
    printf 'bench\tskipped\t0\n' >>"$STATUS"
    FAILED=1
  else
    rm -rf "$WORK/benchmark"
    # spaCy's ner (gpu_allocator null) then also allocates through PyTorch, so that the
    # training logger's torch.cuda.max_memory_allocated covers both models alike.
    # --no-crosscheck: seqeval (and the scikit-learn and SciPy it needs) are not among the
    # carried wheels.
    SPACY_CONFIG_OVERRIDES="--system.gpu_allocator pytorch $EXTRA_OVERRIDES" run_phase bench $((left - 10)) \
      "$PYTHON" -m spacy_hybridner benchmark "$DATA/train.spacy" "$DATA/dev.spacy" "$DATA/test.spacy" \
      --corpus "$CORPUS" -c configs/hybrid_gpu.cfg -c configs/spacy_ner.cfg --baseline spacy_ner \
      --gpu-id "$GPU_ID" --budget-minutes "$budget" --output-dir "$WORK/benchmark" \
      --doc-path "$RESULTS/benchmarks.md" --speed-batch-size "$SPEED_BATCH_SIZE" --speed-repeats "$SPEED_REPEATS" \
      --no-crosscheck
  fi
fi

if wanted summary; then
  run_phase summary 120 "$PYTHON" scripts/gpu_report.py summary --gpu-id "$GPU_ID" --work "$WORK" \
    --results "$RESULTS" --data "$DATA" --corpus "$CORPUS" \
    --command "GPU_ID=$GPU_ID BUDGET_MIN=$BUDGET_MIN PHASES='$PHASES' bash scripts/gpu_check.sh"
fi

echo "== gpu_check: done after $(elapsed)s; phases (name, exit, seconds):"
cat "$STATUS"
exit "$FAILED"

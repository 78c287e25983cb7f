"""An interrupted or failed annotate run publishes nothing that looks complete, and the
rerun works: SIGINT / SIGTERM to the command mid-run (a real subprocess), a worker process
that dies (the run ends with an error instead of hanging). The Ray engine's interrupted run
is in test_annotate.py, which shares one Ray session."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spacy_hybridner.annotate import (
    AnnotateRunError,
    BatchAnnotator,
    annotate,
    default_rejects_path,
    manifest_path,
    read_output,
    temporary_path,
)

from conftest import TRAIN_DATA

N_RECORDS = 40
DEADLINE_S = 300  # generous: a slow, busy machine loads torch and the pipeline in a minute at worst

# Run the real CLI in a fresh interpreter, with one test hook: reading the third batch of
# input blocks (after announcing it in READY), so the signal always lands mid-run, with
# the first batches annotated and written to the temporary output. The child handles
# SIGINT as an interactive start does: started in the background by a non-interactive
# shell (`nohup make test &`), it would inherit SIGINT ignored, which annotate respects.
CHILD = """
import signal, sys, time
from pathlib import Path

signal.signal(signal.SIGINT, signal.default_int_handler)
import spacy_hybridner.annotate.local as annotate_module
from spacy_hybridner.cli import main

read = annotate_module.iter_input_batches
ready = Path(sys.argv[1])

def blocking(*args, **kwargs):
    for i, batch in enumerate(read(*args, **kwargs)):
        if i == 2:
            ready.write_text("ready")
            time.sleep(600)
        yield batch

annotate_module.iter_input_batches = blocking
sys.argv = ["spacy_hybridner", "annotate"] + sys.argv[2:]
main()
"""


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "in.jsonl"
    texts = [text for text, _ in TRAIN_DATA]
    path.write_text("".join(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n" for i in range(N_RECORDS)))
    return path


def _wait_for(predicate, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before {what}: exit {proc.returncode}\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {DEADLINE_S} s")
        time.sleep(0.05)


@pytest.mark.parametrize(
    "signum,workers", [(signal.SIGINT, 1), (signal.SIGTERM, 2)], ids=["SIGINT-1-worker", "SIGTERM-2-workers"]
)
def test_interrupted_run_publishes_nothing_and_reruns(model_dir, corpus, tmp_path, signum, workers):
    output = tmp_path / "out.jsonl"
    ready = tmp_path / "ready"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(ready),
            str(model_dir),
            str(corpus),
            str(output),
            "--batch-size",
            "4",
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(ready.exists, "the third batch", proc)
        assert temporary_path(output).exists(), "the run writes under a temporary name"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, (out, err)
    assert f"interrupted ({signal.Signals(signum).name}): nothing was written" in err
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["in.jsonl", "ready"], f"an interrupted run leaves nothing but its input: {left}"

    summary = annotate(str(model_dir), str(corpus), output, overwrite=True, progress=False, echo=lambda _: None)
    assert summary.annotated == N_RECORDS and summary.exit_code == 0
    assert sorted(r["id"] for r in read_output(output)) == list(range(N_RECORDS))
    manifest = json.loads(manifest_path(output).read_text())
    assert manifest["complete"] and manifest["annotated"] == N_RECORDS and manifest["engine"] == "local"
    assert default_rejects_path(output).read_text() == ""


class DieOnFirstBatch(BatchAnnotator):
    """Kills its own worker process (SIGKILL), as the kernel's OOM killer would."""

    def __call__(self, batch):
        os.kill(os.getpid(), signal.SIGKILL)


def test_dead_worker_ends_the_run_with_an_error(model_dir, corpus, tmp_path):
    output = tmp_path / "out.parquet"
    with pytest.raises(AnnotateRunError, match=r"a worker process died while annotating in\.jsonl lines \d+-\d+"):
        annotate(
            str(model_dir),
            str(corpus),
            output,
            workers=2,
            batch_size=4,
            worker_class=DieOnFirstBatch,
            progress=False,
            echo=lambda _: None,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"], "nothing published, no temporaries"
    assert not Path(str(output) + ".manifest.json").exists()

"""Where annotate writes: never over its input, one run per OUTPUT at a time (a lock), a
disk that cannot be written ends the run with a one-line message, and the manifest names
the published files and never says complete without its output."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_hybridner.annotate import (
    AnnotateInputError,
    AnnotateRunError,
    annotate,
    default_rejects_path,
    manifest_path,
    read_output,
    temporary_path,
)
from spacy_hybridner.annotate import publish as publish_module
from spacy_hybridner.annotate.outputs import JsonLinesWriter
from spacy_hybridner.annotate.publish import OutputLock, OutputPaths, lock_path
from spacy_hybridner.cli import app

from conftest import TRAIN_DATA

TEXTS = [text for text, _ in TRAIN_DATA]
QUIET = {"progress": False, "echo": lambda _: None}
DEADLINE_S = 300  # a hang guard only: each wait below ends when the child process acts


def write_corpus(path: Path, n: int = len(TEXTS)) -> bytes:
    data = "".join(json.dumps({"id": i, "text": TEXTS[i % len(TEXTS)]}) + "\n" for i in range(n)).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def run_cli(*args: str):
    return CliRunner().invoke(app, ["annotate", *map(str, args)], env={"COLUMNS": "1000"})


def one_line_error(result) -> str:
    """The CLI's error: one line on stderr (CliRunner mixes it into output), no traceback."""
    assert "Traceback" not in result.output, result.output
    return " ".join(result.output.split())


# ---------------------------------------------------------------------------------------
# Item 4: OUTPUT, --rejects and the manifest never replace an input


@pytest.mark.parametrize("target", ["output", "rejects", "manifest", "symlink"])
def test_outputs_never_replace_the_input(model_dir, tmp_path, target):
    source = tmp_path / "in.jsonl"
    data = write_corpus(source)
    output, extra = tmp_path / "out.jsonl", []
    if target == "output":
        output = source
    elif target == "rejects":
        extra = ["--rejects", str(source)]
    elif target == "manifest":  # out.manifest.json is the input (JSON Lines, named .json)
        source = source.rename(tmp_path / "out.manifest.json")
        output = tmp_path / "out"
        extra = ["--engine", "local", "--output-format", "docbin"]
    else:
        output = tmp_path / "link.jsonl"
        output.symlink_to(source)
    before = sorted(p.name for p in tmp_path.iterdir())
    for overwrite in ([], ["--overwrite"]):
        result = run_cli(model_dir, source, output, *extra, *overwrite)
        assert result.exit_code == 2, result.output
        message = one_line_error(result)
        assert str(source) in message and "input" in message, message
        assert source.read_bytes() == data
        assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing written, no lock left"


def test_output_folder_holding_the_input_is_refused(model_dir, tmp_path):
    """An OUTPUT folder that is, or holds, the input (folder or file): publishing it
    (with --overwrite) would remove the input."""
    folder = tmp_path / "data"
    data = write_corpus(folder / "in.jsonl")
    for input_path, output in ((folder, folder), (folder / "in.jsonl", folder), (folder, tmp_path)):
        with pytest.raises(AnnotateInputError, match="input") as e:
            annotate(str(model_dir), str(input_path), output, output_format="docbin", overwrite=True, **QUIET)
        assert str(output) in str(e.value) and str(input_path) in str(e.value)
    assert (folder / "in.jsonl").read_bytes() == data
    assert sorted(p.name for p in folder.iterdir()) == ["in.jsonl"]


@pytest.mark.parametrize("out_name", ["out.jsonl", "shards"])
@pytest.mark.parametrize("layout", ["folder", "glob"])
def test_a_rerun_does_not_read_its_own_outputs(model_dir, tmp_path, layout, out_name):
    """OUTPUT inside the input folder (or matched by the glob): the run's own outputs
    (OUTPUT, rejects, manifest, their temporaries, the lock, a folder's shards and _SUCCESS)
    are not input, so the rerun reads the same records as the first run."""
    folder = tmp_path / "data"
    write_corpus(folder / "in.jsonl")
    input_path = str(folder) if layout == "folder" else str(folder / "**" / "*.json*")
    output, fmt = folder / out_name, None if out_name.endswith(".jsonl") else "docbin"
    first = annotate(str(model_dir), input_path, output, output_format=fmt, **QUIET)
    assert (first.read, first.annotated) == (len(TEXTS), len(TEXTS))
    # What a killed run (of the Ray engine: JSON Lines shards) would leave, and old shards.
    temporary_path(output).mkdir()
    write_corpus(temporary_path(output) / "part-0.jsonl", 2)
    if output.is_dir():
        write_corpus(output / "part-old.jsonl", 3)
    again = annotate(str(model_dir), input_path, output, output_format=fmt, overwrite=True, **QUIET)
    assert (again.read, again.annotated, again.rejected) == (len(TEXTS), len(TEXTS), 0)
    assert json.loads(manifest_path(output).read_text())["input_files"] == 1


def test_glob_of_only_own_outputs_is_a_clear_error(model_dir, tmp_path):
    write_corpus(tmp_path / "in.jsonl")
    annotate(str(model_dir), str(tmp_path / "in.jsonl"), tmp_path / "out.jsonl", **QUIET)
    with pytest.raises(AnnotateInputError, match="only the outputs of this run"):
        annotate(str(model_dir), str(tmp_path / "out.*"), tmp_path / "out.jsonl", overwrite=True, **QUIET)


# ---------------------------------------------------------------------------------------
# Item 5: one run per OUTPUT at a time

# The CLI in a fresh interpreter that stops mid-run (on reading its third batch, after
# writing "ready" to the pipe READY_FD) until the test writes to the pipe GO_FD.
BLOCKED_CHILD = """
import os, signal, sys
import spacy_hybridner.annotate.local as local
from spacy_hybridner.cli import main

signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever SIGINT the test runner ignores
ready_fd, go_fd = int(sys.argv[1]), int(sys.argv[2])
read = local.iter_input_batches

def blocking(*args, **kwargs):
    for i, batch in enumerate(read(*args, **kwargs)):
        if i == 2:
            os.write(ready_fd, b"ready\\n")
            os.read(go_fd, 1)
        yield batch

local.iter_input_batches = blocking
sys.argv = ["spacy_hybridner", "annotate"] + sys.argv[3:]
main()
"""


def start_blocked_run(*args: str):
    """(the process, the fd that lets it go on) once the run is mid-way: it holds its lock
    and has written batches to its temporary output."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="1000")
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKED_CHILD, str(ready_w), str(go_r), *map(str, args)],
        pass_fds=(ready_w, go_r),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(ready_w)
    os.close(go_r)
    with os.fdopen(ready_r, "rb") as ready:
        said = ready.readline()  # blocks until the child writes, or EOF if it ended
    if said != b"ready\n":
        os.close(go_w)
        out, err = proc.communicate(timeout=DEADLINE_S)
        pytest.fail(f"the run ended before its third batch: exit {proc.returncode}\n{out}\n{err}")
    return proc, go_w


def test_second_run_on_the_same_output_is_refused(model_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    write_corpus(source, 40)
    output = tmp_path / "out.jsonl"
    proc, go = start_blocked_run(model_dir, source, output, "--batch-size", "4")
    try:
        for overwrite in ([], ["--overwrite"]):
            result = run_cli(model_dir, source, output, *overwrite)
            assert result.exit_code == 2, result.output
            message = one_line_error(result)
            assert f"another annotate run (PID {proc.pid})" in message and str(output) in message, message
            assert "--overwrite" not in message
        assert temporary_path(output).exists() and not output.exists(), "the first run's files untouched"
        os.write(go, b"g")
        out, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        os.close(go)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out, err)
    assert sorted(r["id"] for r in read_output(output)) == list(range(40))
    manifest = json.loads(manifest_path(output).read_text())
    assert manifest["complete"] and manifest["annotated"] == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.jsonl", "out.jsonl", "out.jsonl.rejects.jsonl", "out.jsonl.manifest.json"]
    ), "no lock, no temporaries"


def test_lock_held_in_this_process_names_its_pid(model_dir, tmp_path):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_corpus(source)
    lock = OutputLock(output)
    lock.acquire()
    try:
        with pytest.raises(AnnotateInputError, match=rf"another annotate run \(PID {os.getpid()}\) is writing"):
            annotate(str(model_dir), str(source), output, overwrite=True, **QUIET)
    finally:
        lock.release()
    assert not lock_path(output).exists()
    assert annotate(str(model_dir), str(source), output, **QUIET).annotated == len(TEXTS)


def test_stale_lock_of_a_killed_run_does_not_block(model_dir, tmp_path):
    """A run killed outright (SIGKILL) leaves its lock file, but the kernel released its
    lock when the process died: the next run takes it."""
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_corpus(source)
    code = (
        "import os, signal, sys\nfrom pathlib import Path\n"
        "from spacy_hybridner.annotate.publish import OutputLock\n"
        "OutputLock(Path(sys.argv[1])).acquire()\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.Popen([sys.executable, "-c", code, str(output)])
    assert killed.wait(timeout=DEADLINE_S) == -signal.SIGKILL
    assert lock_path(output).read_text() == f"{killed.pid}\n", "the killed run left its lock file"
    assert annotate(str(model_dir), str(source), output, **QUIET).annotated == len(TEXTS)
    assert not lock_path(output).exists()


def test_manifest_never_claims_complete_without_its_output(tmp_path):
    """Publishing when the temporary OUTPUT is gone (removed by anything else): an error,
    and no manifest, rejects or OUTPUT published."""
    output = tmp_path / "out.jsonl"
    paths = OutputPaths(output, default_rejects_path(output), manifest_path(output))
    paths.prepare(overwrite=False)
    temporary_path(paths.rejects).write_text("")
    with pytest.raises(AnnotateRunError, match=r"\.out\.jsonl\._temporary.*nothing was published"):
        paths.publish({"complete": True}, overwrite=False)
    assert not output.exists() and not paths.manifest.exists() and not paths.rejects.exists()


def test_failed_rename_of_output_publishes_no_manifest(model_dir, tmp_path, monkeypatch):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_corpus(source)
    replace = os.replace

    def failing(src, dst):
        if Path(dst) == output:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
        return replace(src, dst)

    monkeypatch.setattr(publish_module.os, "replace", failing)
    result = run_cli(model_dir, source, output)
    assert result.exit_code == 1, result.output
    assert os.strerror(errno.EIO) in one_line_error(result)
    assert not manifest_path(output).exists() and not output.exists()


# ---------------------------------------------------------------------------------------
# Item 7: a disk that cannot be written: a one-line message, exit 1 (2 before the run)


def test_output_where_a_folder_is_a_file(model_dir, tmp_path):
    """OUTPUT under a regular file (the file system refuses, as root too): exit 2 before
    the run, naming the path and the system's reason."""
    source = tmp_path / "in.jsonl"
    write_corpus(source)
    blocker = tmp_path / "file"
    blocker.write_text("")
    for args in ([blocker / "out.jsonl"], [tmp_path / "out.jsonl", "--rejects", blocker / "r.jsonl"]):
        result = run_cli(model_dir, source, *args)
        assert result.exit_code == 2, result.output
        message = one_line_error(result)
        assert str(blocker) in message and os.strerror(errno.ENOTDIR) in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "in.jsonl"]


def test_full_disk_while_writing(model_dir, tmp_path, monkeypatch):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_corpus(source)

    def full(self, encoded):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(JsonLinesWriter, "write", full)
    result = run_cli(model_dir, source, output)
    assert result.exit_code == 1, result.output
    message = one_line_error(result)
    assert str(temporary_path(output)) in message and os.strerror(errno.ENOSPC) in message, message
    assert "nothing was published" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"], "temporaries and lock removed"


def test_full_disk_while_publishing(model_dir, tmp_path, monkeypatch):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_corpus(source)

    def full(obj, f, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f.name)

    monkeypatch.setattr(publish_module.json, "dump", full)
    result = run_cli(model_dir, source, output)
    assert result.exit_code == 1, result.output
    message = one_line_error(result)
    assert str(temporary_path(manifest_path(output))) in message and os.strerror(errno.ENOSPC) in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


# ---------------------------------------------------------------------------------------
# Item 8: the manifest names the published files


@pytest.mark.parametrize("out_name,fmt", [("out.jsonl", None), ("out.parquet", None), ("shards", "docbin")])
def test_manifest_names_the_published_files(model_dir, tmp_path, out_name, fmt):
    source, output = tmp_path / "in.jsonl", tmp_path / out_name
    write_corpus(source)
    annotate(str(model_dir), str(source), output, output_format=fmt, shard_size=4, **QUIET)
    manifest = json.loads(manifest_path(output).read_text())
    if output.is_dir():
        assert manifest["files"] == ["part-00000.spacy", "part-00001.spacy"]
        assert all((output / name).is_file() for name in manifest["files"])
    else:
        assert manifest["files"] == [out_name]
    assert manifest["output"] == str(output)

"""How annotate's processes end: the local engine's workers end with a main process killed
outright (SIGKILL), a process whose parent is gone ends itself (the watchdog, where the
kernel's parent-death signal is not used), the Ray engine stops on SIGTERM with exit
status 143 and a message, and SIGINT ignored from the start (nohup, a background job of a
script) stays ignored.

Every wait below ends when a process acts (a pipe is written or closed, a process is
reaped); the deadlines only guard against a hang."""

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import spacy_hybridner.annotate.lifetime as lifetime
from spacy_hybridner.annotate import temporary_path

from conftest import TRAIN_DATA

DEADLINE_S = 300
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux: prctl(PR_SET_CHILD_SUBREAPER), /proc"
)
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="1000")

# Runs the command (its "{READY_FD}" argument replaced by a pipe's fd) as a child subreaper
# (Linux: the processes orphaned below it become its children), waits until the command
# writes a line to the pipe, SIGKILLs the command and reaps every process orphaned below it
# until none is left. Prints the ready line and then the pids it reaped, as JSON lines.
SUBREAPER = r"""
import ctypes, json, os, signal, subprocess, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
ready_r, ready_w = os.pipe()
command = [arg.replace("{READY_FD}", str(ready_w)) for arg in sys.argv[1:]]
child = subprocess.Popen(command, pass_fds=(ready_w,), stdout=subprocess.DEVNULL)
os.close(ready_w)
with os.fdopen(ready_r, "rb") as ready:
    line = ready.readline()
print(json.dumps({"ready": line.decode()}), flush=True)
if not line:
    sys.exit(f"the command ended before it was ready: exit {child.wait()}")
os.kill(child.pid, signal.SIGKILL)
child.wait()
reaped = []
while True:
    try:
        reaped.append(os.waitpid(-1, 0)[0])
    except ChildProcessError:
        break
print(json.dumps({"reaped": reaped}), flush=True)
"""


def kill_below_and_reap(command, what: str):
    """(the JSON of the command's ready line, the pids reaped after it was SIGKILLed)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", SUBREAPER, *command], capture_output=True, text=True, timeout=DEADLINE_S, env=ENV
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        left = json.loads(json.loads(out.splitlines()[0])["ready"]) if out else []
        for pid in left if isinstance(left, list) else [left]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"{what} still alive {DEADLINE_S} s after their parent was killed: {left}")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return json.loads(lines[0]["ready"]), lines[1]["reaped"]


# The CLI, stopped for good on reading its third batch, after writing the pids of its
# worker processes to the pipe READY_FD.
STOPPED_CHILD = """
import json, multiprocessing, os, sys, threading
import spacy_hybridner.annotate.local as local
from spacy_hybridner.cli import main

ready_fd = int(sys.argv[1])
read = local.iter_input_batches

def stopping(*args, **kwargs):
    for i, batch in enumerate(read(*args, **kwargs)):
        if i == 2:
            pids = [p.pid for p in multiprocessing.active_children()]
            os.write(ready_fd, (json.dumps(pids) + "\\n").encode())
            threading.Event().wait()
        yield batch

local.iter_input_batches = stopping
sys.argv = ["spacy_hybridner", "annotate"] + sys.argv[2:]
main()
"""


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "in.jsonl"
    texts = [text for text, _ in TRAIN_DATA]
    path.write_text("".join(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n" for i in range(40)))
    return path


@linux_only
def test_workers_end_with_a_killed_main_process(model_dir, corpus, tmp_path):
    """SIGKILL of the main process of --workers 2: both workers (and multiprocessing's
    resource tracker) end too; the old pool waited for its next batch forever."""
    workers, reaped = kill_below_and_reap(
        [
            sys.executable,
            "-c",
            STOPPED_CHILD,
            "{READY_FD}",
            str(model_dir),
            str(corpus),
            str(tmp_path / "out.jsonl"),
            "--batch-size",
            "4",
            "--workers",
            "2",
        ],
        "worker processes",
    )
    assert len(workers) == 2 and set(workers) <= set(reaped), (workers, reaped)
    assert temporary_path(tmp_path / "out.jsonl").exists(), "a killed run leaves its temporaries (documented)"


# A process started by another one (INTERMEDIATE) that calls die_with_parent with the
# watchdog only, as a Ray actor does, and then waits for good.
ORPHAN = """
import importlib.util, os, sys, threading
spec = importlib.util.spec_from_file_location("lifetime", sys.argv[1])
lifetime = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lifetime)
lifetime.die_with_parent(int(sys.argv[3]), kernel=False, interval_s=0.05)
os.write(int(sys.argv[2]), f"{os.getpid()}\\n".encode())
threading.Event().wait()
"""
INTERMEDIATE = """
import os, subprocess, sys, threading
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3], str(os.getpid())],
                 pass_fds=(int(sys.argv[3]),))
threading.Event().wait()
"""


@linux_only
def test_watchdog_ends_a_process_whose_parent_is_gone():
    orphan, reaped = kill_below_and_reap(
        [sys.executable, "-c", INTERMEDIATE, ORPHAN, lifetime.__file__, "{READY_FD}"], "the orphan"
    )
    assert orphan in reaped


def test_a_parent_gone_before_the_call_ends_the_process_at_once():
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('lifetime', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "m.die_with_parent(-1)\nprint('still here')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, lifetime.__file__], capture_output=True, text=True, timeout=DEADLINE_S
    )
    assert done.returncode == -signal.SIGKILL and "still here" not in done.stdout


def _wait_ready(fifo_fd: int, death_fd: int, proc: subprocess.Popen, log: Path) -> None:
    """Block until the FIFO has a line (the run is mid-way) or the child has ended (its
    end of the death pipe closed)."""
    readable, _, _ = select.select([fifo_fd, death_fd], [], [], DEADLINE_S)
    if fifo_fd not in readable:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        pytest.fail(f"the run was not ready (exit {proc.returncode}):\n{log.read_text()[-5000:]}")
    os.read(fifo_fd, 64)


# The CLI with the Ray engine, whose actor stops for good on its first batch after
# writing to the FIFO (a path: Ray starts its workers itself, they inherit no pipe).
RAY_CHILD = """
import sys, threading
import spacy_hybridner.annotate.run as run
from spacy_hybridner.annotate import RayAnnotator
from spacy_hybridner.cli import main

FIFO = sys.argv[1]

class StopsOnFirstBatch(RayAnnotator):
    def __call__(self, table):
        with open(FIFO, "w") as f:
            f.write("ready\\n")
        threading.Event().wait()

run.RayAnnotator = StopsOnFirstBatch
sys.argv = ["spacy_hybridner", "annotate"] + sys.argv[2:]
main()
"""


def test_ray_run_stopped_by_sigterm_exits_143(model_dir, corpus, tmp_path, tmp_path_factory):
    """ray.init installs its own SIGTERM handler (sys.exit(15)): the run ended with exit
    status 15; it is SIGTERM's 143 with the one-line message now, nothing published."""
    fifo = tmp_path_factory.mktemp("fifo") / "ready"
    os.mkfifo(fifo)
    fifo_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # both ends: opening never blocks
    death_r, death_w = os.pipe()
    log = tmp_path_factory.mktemp("log") / "stderr"
    output = tmp_path / "out"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                RAY_CHILD,
                str(fifo),
                str(model_dir),
                str(corpus),
                str(output),
                "--engine",
                "ray",
                "--workers",
                "1",
                "--batch-size",
                "4",
            ],
            pass_fds=(death_w,),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    os.close(death_w)
    try:
        _wait_ready(fifo_fd, death_r, proc, log)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(fifo_fd)
        os.close(death_r)
    stderr = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-5000:]
    assert "annotate interrupted (SIGTERM): nothing was written" in stderr, stderr
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr, "no stack dump"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"], "nothing published, no temporaries, no lock"


# Starts the CLI (STOPPED_CHILD's hook, on a FIFO) with SIGINT ignored from the start, as
# nohup and a script's background job start a process: SIG_IGN survives exec.
IGNORING_START = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


@linux_only
def test_sigint_ignored_from_the_start_stays_ignored(model_dir, corpus, tmp_path, tmp_path_factory):
    """annotate respects an inherited SIG_IGN for SIGINT (docs/annotating.md): a
    SIGINT then does nothing (the kernel discards it), SIGTERM still stops the run."""
    fifo = tmp_path_factory.mktemp("fifo") / "ready"
    os.mkfifo(fifo)
    fifo_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    death_r, death_w = os.pipe()
    log = tmp_path_factory.mktemp("log") / "stderr"
    child = STOPPED_CHILD.replace("ready_fd = int(sys.argv[1])", "ready_fd = os.open(sys.argv[1], os.O_WRONLY)")
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                IGNORING_START,
                "-c",
                child,
                str(fifo),
                str(model_dir),
                str(corpus),
                str(tmp_path / "out.jsonl"),
                "--batch-size",
                "4",
            ],
            pass_fds=(death_w,),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    os.close(death_w)
    try:
        _wait_ready(fifo_fd, death_r, proc, log)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
        assert ignored & (1 << (signal.SIGINT - 1)), "SIGINT is still ignored in the running command"
        proc.send_signal(signal.SIGINT)  # discarded: a handled SIGINT would end the run with 130 first
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(fifo_fd)
        os.close(death_r)
    stderr = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-5000:]
    assert "annotate interrupted (SIGTERM)" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]

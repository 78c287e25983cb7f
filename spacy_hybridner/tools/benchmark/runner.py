"""The benchmark's child processes: one run with its output echoed and a wall-time budget,
and what makes a measurement repeatable (the machine, the exact command)."""

import os
import platform
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

STOP_GRACE_S = 120.0  # time a stopped training gets to finish its step and save


def _peak_rss_mb(pid: int) -> Optional[float]:
    """Peak resident memory of a running process (Linux), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _echo_lines(proc: subprocess.Popen, prefix: str, echo: Callable[[str], None]) -> Tuple[threading.Thread, List[str]]:
    """A started thread that keeps and echoes the child's output lines, and the list it keeps them in."""
    lines: List[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            echo(f"[{prefix}] {line.rstrip()}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return reader, lines


def _watch(
    proc: subprocess.Popen, prefix: str, echo: Callable[[str], None], budget_s: Optional[float], start: float
) -> Tuple[Optional[float], bool]:
    """Wait for the child, reading its peak memory; SIGINT when the budget runs out, terminate
    it ``STOP_GRACE_S`` later. RETURNS: peak RSS (MB) and whether the budget stopped it."""
    peak, stopped, stopped_at = None, False, 0.0
    while proc.poll() is None:
        rss = _peak_rss_mb(proc.pid)
        if rss is not None:
            peak = max(peak or 0.0, rss)
        if budget_s is not None and not stopped and time.time() - start > budget_s:
            echo(f"[{prefix}] wall-time budget of {budget_s / 60:.1f} min reached: stopping")
            proc.send_signal(signal.SIGINT)
            stopped, stopped_at = True, time.time()
        elif stopped and time.time() - stopped_at > STOP_GRACE_S:
            echo(f"[{prefix}] still running {STOP_GRACE_S:.0f} s after SIGINT: terminating")
            proc.terminate()
            stopped_at = float("inf")
        time.sleep(0.5)
    return peak, stopped


def run_streaming(cmd: List[str], prefix: str, echo: Callable[[str], None], budget_s: Optional[float] = None) -> Dict:
    """Run a command, echo its output lines with a prefix, stop it (SIGINT) when the
    budget runs out. RETURNS (Dict): returncode, seconds, peak_rss_mb, stopped, output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.time()
    # A shell's background job inherits SIGINT as ignored (nohup ... &); restore the
    # default so that the budget's SIGINT reaches spaCy as a KeyboardInterrupt.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    reader, lines = _echo_lines(proc, prefix, echo)
    peak, stopped = _watch(proc, prefix, echo, budget_s, start)
    reader.join(timeout=10)
    return {
        "returncode": proc.returncode,
        "seconds": time.time() - start,
        "peak_rss_mb": peak,
        "stopped": stopped,
        "output": "".join(lines),
    }


def dir_size_mb(path: Path) -> float:
    """Size of the files under a folder, in MB."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def machine_description(gpu_id: int = -1) -> str:
    """CPU model and cores, Python, spaCy and torch versions; with ``gpu_id`` >= 0 also the
    GPU's name and memory and the CUDA version torch was built with."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import spacy
    import torch

    gpu = ""
    if gpu_id >= 0 and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(gpu_id)
        gpu = f"; GPU {props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, spaCy {spacy.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}"
    )


# The commands that start ``spacy train``, which reads SPACY_CONFIG_OVERRIDES: their recorded
# line carries the variable; in the others' it would change nothing, so it is left out.
TRAINING_COMMANDS = ("benchmark",)


def benchmark_command(argv: List[str], command: str = "benchmark") -> str:
    """The exact command of a run, for the document or its rows: ``python -m
    spacy_hybridner COMMAND`` with the arguments, each quoted for the shell; for a
    command that trains (``benchmark``), after ``SPACY_CONFIG_OVERRIDES`` when set
    (spaCy applies those to every training run). Every command that records its own
    line (``benchmark``, ``speed``, ``serve-benchmark``, ``annotate-benchmark``) uses it.

    argv (List[str]): The arguments after COMMAND. command (str): The command's name.
    RETURNS (str): A shell line.
    """
    line = f"python -m spacy_hybridner {command} " + " ".join(shlex.quote(a) for a in argv)
    return with_config_overrides(line) if command in TRAINING_COMMANDS else line


def with_config_overrides(command: str) -> str:
    """``command`` after ``SPACY_CONFIG_OVERRIDES=...`` when that variable is set: spaCy
    reads it in every ``spacy train`` that the command starts, so a recorded command
    without it would not repeat the run."""
    overrides = os.environ.get("SPACY_CONFIG_OVERRIDES")
    return f"SPACY_CONFIG_OVERRIDES={shlex.quote(overrides)} {command}" if overrides else command

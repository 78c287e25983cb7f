"""Training loggers.

``TrainingLogger.v1``: spaCy's console table, plus a JSONL log with wall time. spaCy's
ConsoleLogger can write JSONL, but without the elapsed time or word count, which training
curves against wall time need; this logger writes every evaluation step to ``path`` with
``seconds`` and ``words`` and, when the process has used CUDA through PyTorch,
``gpu_peak_mb``: the most GPU memory PyTorch's allocator had handed out so far
(``torch.cuda.max_memory_allocated``; it covers thinc's cupy arrays too with
``gpu_allocator = "pytorch"``).

``TensorBoardLogger.v1``: losses, dev scores and words per second as TensorBoard scalars,
chained to another logger if given.
"""

import sys
import time
from typing import IO, Any, Callable, Dict, Optional, Tuple

import srsly
from spacy import util
from spacy.util import registry


def gpu_peak_mb() -> Optional[float]:
    """``torch.cuda.max_memory_allocated()`` in MiB when this process has initialised CUDA
    through PyTorch, else None (never initialises CUDA, never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


@registry.loggers("spacy-hybridner.TrainingLogger.v1")
def training_logger_v1(path: Optional[str] = None, progress_bar: Optional[str] = None):
    """path (Optional[str]): JSONL file to write (replaced if it exists); None for
    console output only. progress_bar (Optional[str]): as for spaCy's ConsoleLogger."""
    console = registry.loggers.get("spacy.ConsoleLogger.v3")(progress_bar=progress_bar)

    def setup(nlp, stdout: IO = sys.stdout, stderr: IO = sys.stderr) -> Tuple[Callable, Callable]:
        log_console, finalize_console = console(nlp, stdout, stderr)
        stream = None
        if path is not None:
            log_path = util.ensure_path(path)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            stream = log_path.open("w", encoding="utf8")

        def log_step(info: Optional[Dict[str, Any]]) -> None:
            log_console(info)
            if info is None or stream is None:
                return
            record = {
                "epoch": info["epoch"],
                "step": info["step"],
                "seconds": info["seconds"],
                "words": info["words"],
                "score": float(info["score"]),
                "scores": {k: v for k, v in info["other_scores"].items() if isinstance(v, (int, float))},
                "losses": {k: float(v) for k, v in info["losses"].items()},
            }
            peak = gpu_peak_mb()
            if peak is not None:
                record["gpu_peak_mb"] = peak
            stream.write(srsly.json_dumps(record) + "\n")
            stream.flush()

        def finalize() -> None:
            finalize_console()
            if stream is not None:
                stream.close()

        return log_step, finalize

    return setup


def _scalars(prefix: str, values: Dict[str, Any]) -> Dict[str, float]:
    """Numbers in ``values`` (nested dicts flattened with ``/``), keyed under ``prefix``."""
    found: Dict[str, float] = {}
    for key, value in (values or {}).items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            found[f"{prefix}/{key}"] = float(value)
        elif isinstance(value, dict):
            found.update(_scalars(f"{prefix}/{key}", value))
    return found


@registry.loggers("spacy-hybridner.TensorBoardLogger.v1")
def tensorboard_logger_v1(log_dir: str = "tensorboard", console_logger: Optional[Callable] = None):
    """Write training to TensorBoard (``torch.utils.tensorboard``; ``pip install
    'spacy-hybridner[tensorboard]'``), at each evaluation step: ``loss/<component>``
    (summed since the previous evaluation), ``score`` (the weighted dev score),
    ``dev/<name>`` for every numeric dev score (per-type scores as
    ``dev/ents_per_type/<LABEL>/f``), ``words`` (seen so far) and ``words_per_second``
    (training words per second of wall time since the previous evaluation, evaluation
    included). View with ``tensorboard --logdir <log_dir>``.

    log_dir (str): Folder of the event files (made if missing).
    console_logger (Optional[Callable]): Another logger to chain to, e.g.
        ``spacy.ConsoleLogger.v3`` or ``spacy-hybridner.TrainingLogger.v1`` (a
        ``[training.logger.console_logger]`` block); None: TensorBoard only.
    """

    def setup(nlp, stdout: IO = sys.stdout, stderr: IO = sys.stderr) -> Tuple[Callable, Callable]:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(
                f"spacy-hybridner.TensorBoardLogger.v1 needs the tensorboard package ({err}): "
                f"pip install 'spacy-hybridner[tensorboard]' (or pip install tensorboard)."
            ) from None
        chained = console_logger(nlp, stdout, stderr) if console_logger is not None else None
        log_path = util.ensure_path(log_dir)
        log_path.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(log_dir=str(log_path))
        last = {"time": time.perf_counter(), "words": 0}

        def log_step(info: Optional[Dict[str, Any]]) -> None:
            if chained is not None:
                chained[0](info)
            if info is None:
                return
            step = int(info["step"])
            now = time.perf_counter()
            scalars = {f"loss/{name}": float(value) for name, value in info["losses"].items()}
            scalars.update(_scalars("dev", info.get("other_scores") or {}))
            if info.get("score") is not None:
                scalars["score"] = float(info["score"])
            scalars["words"] = float(info["words"])
            if now > last["time"]:
                scalars["words_per_second"] = (info["words"] - last["words"]) / (now - last["time"])
            last.update(time=now, words=info["words"])
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step=step)
            writer.flush()

        def finalize() -> None:
            if chained is not None:
                chained[1]()
            writer.close()

        return log_step, finalize

    return setup

"""A training logger: spaCy's console table, plus a JSONL log with wall time.

spaCy's ConsoleLogger can write JSONL, but without the elapsed time or word count,
which training curves against wall time need. This logger prints spaCy's console
table and writes every evaluation step to ``path`` with ``seconds`` and ``words``.
"""
import sys
from typing import IO, Any, Callable, Dict, Optional, Tuple

import srsly
from spacy import util
from spacy.util import registry


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
            stream.write(srsly.json_dumps(record) + "\n")
            stream.flush()

        def finalize() -> None:
            finalize_console()
            if stream is not None:
                stream.close()

        return log_step, finalize

    return setup

"""What an engine is asked to do (:class:`Job`) and what it reports (:class:`AnnotateSummary`),
the same for both engines."""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .outputs import write_rejects
from .records import RecordSettings

# Exit status of a run that completed but rejected some records (0: all annotated).
EXIT_REJECTS = 3


@dataclass
class AnnotateSummary:
    """What a run did: documents read (annotated + rejected), annotated, rejected, words
    (spaCy tokens of the annotated docs), wall seconds, where the results are, and how
    many annotated records repeated an earlier record's id (they are all kept)."""

    engine: str
    read: int
    annotated: int
    rejected: int
    words: int
    seconds: float
    output: str
    rejects: str
    duplicate_ids: int = 0
    manifest: str = ""

    @property
    def words_per_second(self) -> float:
        return self.words / self.seconds if self.seconds > 0 else 0.0

    @property
    def docs_per_second(self) -> float:
        return self.annotated / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when every record was annotated, EXIT_REJECTS (3) when some were rejected."""
        return EXIT_REJECTS if self.rejected else 0

    def lines(self) -> List[str]:
        return [
            (
                f"{self.engine} engine: {self.read:,} documents read, {self.annotated:,} annotated, "
                f"{self.rejected:,} rejected, {self.duplicate_ids:,} duplicate ids in {self.seconds:.1f} s "
                f"({self.docs_per_second:,.1f} docs/s, {self.words_per_second:,.0f} words/s)"
            ),
            f"annotations: {self.output}",
            f"rejects: {self.rejects}" + (" (none)" if not self.rejected else ""),
            f"manifest: {self.manifest}",
        ]


@dataclass
class Job:
    """What every engine is asked to do: annotate ``files`` (read as ``settings`` say) with
    ``model`` into ``output`` (the run's temporary output, in ``output_format``) and
    ``rejects_path``, on ``workers`` worker processes or actors, ``batch_size`` input
    records per batch, with ``nlp.pipe``'s ``pipe_batch_size`` (None: the pipeline's)
    and, if ``progress``, a progress bar; with ``marginals``, the ``hybrid_ner`` components
    also store their tag marginals in each Doc (DocBin output: soft targets for distillation);
    ``precision`` and ``runtime``, if given, the inference settings the transformers run
    with (the Annotator's; None: as the pipeline was saved)."""

    model: str
    files: List[Path]
    settings: RecordSettings
    output: Path
    output_format: str
    rejects_path: Path
    workers: int
    batch_size: int
    pipe_batch_size: Optional[int]
    progress: bool
    marginals: bool = False
    precision: Optional[str] = None
    runtime: Optional[str] = None

    def finish(
        self,
        engine: str,
        start: float,
        n_annotated: int,
        n_words: int,
        rejects: List[Dict[str, Any]],
        duplicate_ids: int,
    ) -> AnnotateSummary:
        """Write the rejects file and sum the run up (``start``: its ``time.perf_counter()``)."""
        write_rejects(self.rejects_path, rejects)
        return AnnotateSummary(
            engine,
            n_annotated + len(rejects),
            n_annotated,
            len(rejects),
            n_words,
            time.perf_counter() - start,
            str(self.output),
            str(self.rejects_path),
            duplicate_ids,
        )

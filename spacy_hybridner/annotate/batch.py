"""The engine-neutral core: one batch of input columns in, one encoded batch of output
records out, the same in this process, in the local engine's worker processes and in the
Ray actors, so every engine gives the same records.

:func:`~.records.parse_batch` reads the records, :func:`annotate_rows` annotates them
(``nlp.pipe`` of an :class:`~.annotator.Annotator`), :func:`output_record` turns each Doc
into an output record and :func:`annotate_batch` chains the three; a
:class:`BatchAnnotator` then encodes the batch for its output format.
"""

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from .annotator import Annotator, doc_records
from .outputs import encode_batch
from .records import RecordSettings, Row, id_digests, parse_batch


def inference_problem(precision: Optional[str], runtime: Optional[str]) -> Optional[str]:
    """Why ``precision`` and ``runtime`` are not inference settings an :class:`Annotator`
    can run a pipeline with, or None if they are (None for either: left as saved; see
    :data:`spacy_hybridner.inference.PRECISIONS` and ``RUNTIMES``). Checked by
    ``annotate`` and ``serve`` before anything loads."""
    if precision is None and runtime is None:
        return None
    from ..inference import PRECISIONS, RUNTIMES

    for name, value, valid in (("precision", precision, PRECISIONS), ("runtime", runtime, RUNTIMES)):
        if value is not None and value not in valid:
            return (
                f"--{name} must be one of {', '.join(valid)} (or left out: as the pipeline was saved), got {value!r}."
            )
    return None


def annotate_rows(annotator: Annotator, rows: Iterable[Row], n_process: int = 1) -> Iterator[Tuple[Row, Any]]:
    """(row, Doc) for each row, in order, from ``nlp.pipe`` of the annotator's pipeline."""
    kwargs = {} if annotator.batch_size is None else {"batch_size": annotator.batch_size}
    pairs = ((row.text, row) for row in rows)
    for doc, row in annotator.nlp.pipe(pairs, as_tuples=True, n_process=n_process, **kwargs):
        yield row, doc


def output_record(row: Row, doc, settings: RecordSettings) -> Dict[str, Any]:
    """The output record of an annotated row: ``id``, ``ents`` (``start_char``,
    ``end_char``, ``label``, ``text``, ``confidence``) and, with include_text, ``text``."""
    record = {"id": row.id, "ents": doc_records(doc)}
    if settings.include_text:
        record["text"] = row.text
    return record


def annotate_batch(annotator: Annotator, batch: Dict[str, list], settings: RecordSettings) -> Dict[str, Any]:
    """Annotate one batch of input columns: ``{"records": [...], "docs": [...],
    "rejects": [...], "n_words": int}`` (records and docs in input order, valid rows only).

    A text on which the pipeline raises is a reject too: if ``nlp.pipe`` fails on the
    batch, its rows are annotated one at a time and those that fail are rejected with
    the error, so one bad record never fails the run."""
    rows, rejects = parse_batch(batch, settings)
    try:
        pairs = list(annotate_rows(annotator, rows))
    except Exception:
        pairs = []
        for row in rows:
            try:
                pairs.extend(annotate_rows(annotator, [row]))
            except Exception as e:
                rejects.append(
                    {
                        "id": row.id,
                        "reason": f"the pipeline failed on this text: {type(e).__name__}: {e}",
                        "source": row.source,
                        "line": row.line,
                    }
                )
    records = [output_record(row, doc, settings) for row, doc in pairs]
    return {
        "records": records,
        "docs": [doc for _, doc in pairs],
        "rejects": rejects,
        "n_words": sum(len(doc) for _, doc in pairs),
    }


@dataclass
class BatchOutput:
    """One annotated batch, ready for its writer: the encoded records
    (:func:`~.outputs.encode_batch`), their number and words, the rejects and the ids' digests."""

    encoded: Any
    n_records: int
    n_words: int
    rejects: List[Dict[str, Any]]
    digests: Any


class BatchAnnotator:
    """Loads the pipeline once and turns each batch of input columns into a
    :class:`BatchOutput` (:func:`annotate_batch`, then :func:`~.outputs.encode_batch`): what
    runs in this process (local engine, one worker), in each worker process of the local
    engine, and in each Ray actor (:class:`~.ray_engine.RayAnnotator`), so all give the
    same records.

    Fault injection in tests: subclass it, kill the process in ``__call__``, and pass the
    subclass as ``worker_class`` to :func:`~.run.annotate`."""

    def __init__(
        self,
        model: str,
        batch_size: Optional[int],
        settings: RecordSettings,
        output_format: str,
        torch_threads: Optional[int] = None,
        marginals: bool = False,
        precision: Optional[str] = None,
        runtime: Optional[str] = None,
    ) -> None:
        self.annotator = Annotator(
            model,
            batch_size=batch_size,
            torch_threads=torch_threads,
            marginals=marginals,
            precision=precision,
            runtime=runtime,
        )
        self.settings = settings
        self.output_format = output_format

    def __call__(self, batch: Dict[str, list]) -> BatchOutput:
        result = annotate_batch(self.annotator, batch, self.settings)
        ids = [r["id"] for r in result["records"]]
        return BatchOutput(
            encode_batch(result, self.output_format, self.settings.include_text),
            len(ids),
            result["n_words"],
            result["rejects"],
            id_digests(ids),
        )

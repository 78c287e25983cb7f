"""Annotate a corpus: ``python -m spacy_hybridner annotate MODEL INPUT OUTPUT``.

Two engines run the same engine-neutral code:

- ``local`` (:mod:`.local`): ``nlp.pipe`` in this process, or in a pool of worker
  processes, for small jobs;
- ``ray`` (:mod:`.ray_engine`): Ray Data, ``read_datasource`` -> ``map_batches`` with an
  actor pool (the pipeline loaded once per actor, torch on one thread) -> shards, locally
  or on a Ray cluster.

Both read records with :func:`~.records.parse_batch` (the same checks, the same ids, the
same reject reasons), annotate them with :func:`~.batch.annotate_rows` (``nlp.pipe`` of an
:class:`~.annotator.Annotator`) and turn each Doc into an output record with
:func:`~.batch.output_record`; :func:`~.batch.annotate_batch` chains the three for one batch
of input columns and :class:`~.batch.BatchAnnotator` encodes it for its output format. So
the records are the same whichever engine runs them.

Inputs (:mod:`.inputs`): JSON Lines (one object per line, ``--id-field``/``--text-field``),
plain text (one document per line, the line number as id) or Parquet; a file, a folder or
a glob. Outputs (:mod:`.outputs`; the local engine's writers in :mod:`.writers`): JSON Lines,
Parquet (one record per document: ``id``, ``ents``, optionally ``text``) or spaCy DocBin
shards. Records that cannot be annotated go to a rejects file (JSON Lines: ``id``,
``reason``, ``source``, ``line``) and the run goes on.

Outputs are published whole or not at all (:mod:`.publish`): a run locks OUTPUT
(``.NAME.lock`` beside it), each engine writes OUTPUT, its rejects file and its manifest
under temporary names beside them (``.NAME._temporary``), and :func:`~.run.annotate`
renames them into place only when the run has completed (the manifest last; a folder gets
a ``_SUCCESS`` file, as a Hadoop or Spark job's does). An interrupted or failed run removes
its temporaries (a process killed outright leaves them, and the next run refuses them
without ``--overwrite``; its worker processes end with it, :mod:`.lifetime`). OUTPUT, its
rejects file and its manifest are never an input, and never read as one.

The modules, one concern each: :mod:`.annotator` (texts in, entity records out; also
used by ``serve``), :mod:`.records`, :mod:`.inputs`, :mod:`.batch`, :mod:`.outputs`,
:mod:`.publish`, :mod:`.job` (what an engine is asked and what it reports),
:mod:`.local`, :mod:`.ray_engine` (with :mod:`.ray_io`, its Ray Data reader and writers),
:mod:`.lifetime` (helper processes that end with their parent), :mod:`.errors` and
:mod:`.run` (``annotate`` itself).
"""

from .annotator import Annotator, EntityRecord, doc_records, filter_records, surrogate_problem, text_problem
from .batch import BatchAnnotator, BatchOutput, annotate_batch, annotate_rows, output_record
from .errors import AnnotateInputError, AnnotateInterrupted, AnnotateRunError
from .inputs import INPUT_FORMATS, read_parquet_batches, resolve_inputs
from .job import EXIT_REJECTS, AnnotateSummary
from .outputs import OUTPUT_FORMATS, docbin_bytes, encode_batch, read_output, records_table, write_rejects
from .publish import default_rejects_path, manifest_path, prepare_output, temporary_path
from .ray_engine import RayAnnotator
from .records import DEFAULT_MAX_CHARS, RecordSettings, Row, id_from_columns, parse_batch
from .run import annotate

__all__ = [
    "DEFAULT_MAX_CHARS",
    "EXIT_REJECTS",
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "AnnotateInputError",
    "AnnotateInterrupted",
    "AnnotateRunError",
    "AnnotateSummary",
    "Annotator",
    "BatchAnnotator",
    "BatchOutput",
    "EntityRecord",
    "RayAnnotator",
    "RecordSettings",
    "Row",
    "annotate",
    "annotate_batch",
    "annotate_rows",
    "default_rejects_path",
    "doc_records",
    "docbin_bytes",
    "encode_batch",
    "filter_records",
    "id_from_columns",
    "manifest_path",
    "output_record",
    "parse_batch",
    "prepare_output",
    "read_output",
    "read_parquet_batches",
    "records_table",
    "resolve_inputs",
    "surrogate_problem",
    "temporary_path",
    "text_problem",
    "write_rejects",
]

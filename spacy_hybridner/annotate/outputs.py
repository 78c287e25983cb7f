"""Output formats: JSON Lines, Parquet and spaCy DocBin, and the two shapes an output
takes, one file or a folder of shards; the rejects file.

One small object per format (:data:`OUTPUTS`) owns everything that differs between the
formats: its extensions, how a batch of annotated records is encoded (the same in both
engines, :meth:`OutputFormat.encode`), how the local engine writes the encoded batches
(:meth:`OutputFormat.writer`, with the writers of :mod:`.writers`), how a Ray actor hands
them on and Ray Data writes them (:meth:`OutputFormat.actor_output`,
:meth:`OutputFormat.write_dataset`) and how a file is read back (:meth:`OutputFormat.read`).
One object per shape (:func:`shape_of`) owns what differs between one file and a folder of
shards: its files, its format, its completion mark.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .annotator import doc_records
from .errors import AnnotateInputError
from .records import ID_TYPES, id_from_columns
from .writers import DocBinShardWriter, JsonLinesWriter, OutputWriter, ParquetWriter, records_table


class OutputFormat:
    """An output format: its name (``--output-format``), its file extensions (the first
    is the one it writes) and whether the local engine writes it as a folder of shards
    (``local_shards``) rather than one file."""

    name: str
    extensions: Tuple[str, ...]
    local_shards = False

    @property
    def ext(self) -> str:
        """The extension of the files it writes, without the dot."""
        return self.extensions[0][1:]

    def encode(self, result: Dict[str, Any], include_text: bool) -> Any:
        """One annotated batch (:func:`~.batch.annotate_batch`) as its writer takes it."""
        raise NotImplementedError

    def writer(self, path: Path, include_text: bool, shard_size: int) -> OutputWriter:
        """The local engine's writer of the output at ``path``."""
        raise NotImplementedError

    def read(self, file: Path) -> List[Dict[str, Any]]:
        """The records of one file of this format (see :func:`read_output`)."""
        raise NotImplementedError

    def actor_output(self, encoded: Any, n_records: int) -> Any:
        """What a Ray actor returns for an encoded batch of ``n_records`` records: an Arrow table."""
        raise NotImplementedError

    def write_dataset(self, ds: Any, path: str, ray_remote_args: Dict[str, Any]) -> None:
        """Write a Ray dataset of :meth:`actor_output` tables as shards into the folder ``path``."""
        raise NotImplementedError


class BytesFormat(OutputFormat):
    """A format whose encoded batches are bytes (JSON Lines, DocBin): a Ray actor returns
    them in a binary column named after the format, and each Ray write task writes its
    batches as one shard (:meth:`write_shard`, by :class:`~.ray_io.BytesDatasink`), so
    that a record keeps its id as given, which an Arrow column of mixed or huge ids could not."""

    def actor_output(self, encoded: bytes, n_records: int) -> Any:
        import pyarrow as pa

        return pa.table({self.name: pa.array([encoded] if n_records else [], pa.binary())})

    def write_dataset(self, ds: Any, path: str, ray_remote_args: Dict[str, Any]) -> None:
        from .ray_io import BytesDatasink

        ds.write_datasink(BytesDatasink(path, self), ray_remote_args=ray_remote_args)

    def write_shard(self, chunks: List[bytes], file) -> None:
        """Write the encoded batches of one Ray write task as one shard to ``file``."""
        raise NotImplementedError


class JsonLines(BytesFormat):
    """JSON Lines: one record per line, ``{"id", "ents"[, "text"]}``, ids as given."""

    name = "jsonl"
    extensions = (".jsonl", ".ndjson", ".json")

    def encode(self, result: Dict[str, Any], include_text: bool) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result["records"]).encode("utf8")

    def writer(self, path: Path, include_text: bool, shard_size: int) -> OutputWriter:
        return JsonLinesWriter(path)

    def read(self, file: Path) -> List[Dict[str, Any]]:
        with open(file, encoding="utf8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def write_shard(self, chunks: List[bytes], file) -> None:
        for chunk in chunks:
            file.write(chunk)


class Parquet(OutputFormat):
    """Parquet: one row per record with the schema of :func:`records_table`."""

    name = "parquet"
    extensions = (".parquet",)

    def encode(self, result: Dict[str, Any], include_text: bool) -> Any:
        return records_table(result["records"], include_text)

    def writer(self, path: Path, include_text: bool, shard_size: int) -> OutputWriter:
        return ParquetWriter(path, include_text)

    def read(self, file: Path) -> List[Dict[str, Any]]:
        import pyarrow.parquet as pq

        records = pq.read_table(file).to_pylist()
        for record in records:
            record["id"] = id_from_columns(record["id"], record.pop("id_type", None))
        return records

    def actor_output(self, encoded: Any, n_records: int) -> Any:
        return encoded

    def write_dataset(self, ds: Any, path: str, ray_remote_args: Dict[str, Any]) -> None:
        from .ray_io import ShardNames

        ds.write_parquet(path, filename_provider=ShardNames(self.ext), ray_remote_args=ray_remote_args)


class DocBinFormat(BytesFormat):
    """spaCy DocBin: the annotated Docs (user data kept, ids in it, see :func:`docbin_bytes`);
    the local engine writes a folder of shards of ``shard_size`` Docs each."""

    name = "docbin"
    extensions = (".spacy",)
    local_shards = True

    def encode(self, result: Dict[str, Any], include_text: bool) -> bytes:
        return docbin_bytes(result["docs"], [r["id"] for r in result["records"]])

    def writer(self, path: Path, include_text: bool, shard_size: int) -> OutputWriter:
        return DocBinShardWriter(path, shard_size)

    def read(self, file: Path) -> List[Dict[str, Any]]:
        """``id`` and ``ents`` of each Doc (``ent._.confidence`` registered to read it)."""
        import spacy
        from spacy.tokens import DocBin

        from ..extensions import install_extensions

        install_extensions()
        vocab = spacy.blank("xx").vocab
        return [
            {"id": id_from_columns(doc.user_data.get("id"), doc.user_data.get("id_type")), "ents": doc_records(doc)}
            for doc in DocBin().from_disk(file).get_docs(vocab)
        ]

    def write_shard(self, chunks: List[bytes], file) -> None:
        from spacy.tokens import DocBin

        db = DocBin(store_user_data=True)
        for data in chunks:
            db.merge(DocBin(store_user_data=True).from_bytes(data))
        file.write(db.to_bytes())


OUTPUTS: Dict[str, OutputFormat] = {fmt.name: fmt for fmt in (JsonLines(), Parquet(), DocBinFormat())}
OUTPUT_FORMATS = {name: fmt.extensions for name, fmt in OUTPUTS.items()}


def output_format_of(output: Path, output_format: Optional[str]) -> str:
    """The output format: ``output_format``, else from OUTPUT's extension."""
    if output_format is not None:
        if output_format not in OUTPUTS:
            raise AnnotateInputError(f"unknown output format {output_format!r}: use one of {', '.join(OUTPUTS)}.")
        return output_format
    for fmt in OUTPUTS.values():
        if output.suffix.lower() in fmt.extensions:
            return fmt.name
    raise AnnotateInputError(
        f"cannot tell the output format of {output} from its extension: give --output-format ({', '.join(OUTPUTS)})."
    )


def encode_batch(result: Dict[str, Any], output_format: str, include_text: bool):
    """The output of one annotated batch as its writer takes it, the same in both engines:
    JSON Lines: the lines' bytes; Parquet: an Arrow table (:func:`records_table`); DocBin:
    the bytes of a DocBin of the batch's Docs (ids in ``user_data``)."""
    return OUTPUTS[output_format].encode(result, include_text)


#: ``Doc`` extensions that hold a component's activations, not annotations: left out of
#: DocBin output (spacy-transformers' ``doc._.trf_data`` is the transformer's output for
#: every wordpiece, hundreds of floats per word).
ACTIVATION_EXTENSIONS = ("trf_data",)


def docbin_bytes(docs: List[Any], ids: List[Any]) -> bytes:
    """A DocBin of the docs with each id in ``doc.user_data["id"]`` and its type in
    ``user_data["id_type"]`` (an integer outside 64 bits, which msgpack cannot hold, is
    stored as its decimal string); user data kept, so ``ent._.confidence`` travels too,
    except the ``ACTIVATION_EXTENSIONS``."""
    from spacy.tokens import DocBin

    db = DocBin(store_user_data=True)
    for doc, id_ in zip(docs, ids):
        for name in ACTIVATION_EXTENSIONS:
            doc.user_data.pop(("._.", name, None, None), None)
        fits = isinstance(id_, str) or -(1 << 63) <= id_ < (1 << 64)
        doc.user_data["id"] = id_ if fits else str(id_)
        doc.user_data["id_type"] = ID_TYPES[type(id_)]
        db.add(doc)
    return db.to_bytes()


# ---------------------------------------------------------------------------------------
# The shape of an output: one file, or a folder of shards


class OneFile:
    """An output that is one file (the local engine's JSON Lines and Parquet)."""

    def files(self, path: Path) -> List[Path]:
        """The output's files."""
        return [path]

    def names(self, path: Path) -> List[str]:
        """The output's files as the manifest lists them: the file's own name."""
        return [path.name]

    def format_of(self, path: Path) -> str:
        """The output's format, from its extension."""
        return output_format_of(path, None)

    def mark_complete(self, path: Path) -> None:
        """Nothing: a file is complete once it has its name."""


class ShardFolder:
    """A folder of shards (the Ray engine's outputs, the local engine's DocBin), marked
    complete by an empty ``_SUCCESS`` file, as Hadoop and Spark jobs mark theirs."""

    def files(self, path: Path) -> List[Path]:
        """The files in the folder and its subfolders."""
        return sorted(p for p in path.rglob("*") if p.is_file())

    def names(self, path: Path) -> List[str]:
        """The files as the manifest lists them: relative to the folder."""
        return sorted(str(p.relative_to(path)) for p in self.files(path))

    def format_of(self, path: Path) -> str:
        """The format of the first of :data:`OUTPUTS` whose extension a file has (else
        from the folder's own extension)."""
        exts = {p.suffix.lower() for p in self.files(path)}
        for fmt in OUTPUTS.values():
            if exts & set(fmt.extensions):
                return fmt.name
        return output_format_of(path, None)

    def mark_complete(self, path: Path) -> None:
        (path / "_SUCCESS").write_bytes(b"")


def shape_of(path: Path) -> Union[OneFile, ShardFolder]:
    """The shape of the (temporary or published) output at ``path``: a folder of shards or one file."""
    return ShardFolder() if path.is_dir() else OneFile()


def read_output(path: Path, output_format: Optional[str] = None) -> List[Dict[str, Any]]:
    """The records of an annotate output (a file, or a folder of shards) as dicts with
    ``id`` (as given in the input: a Parquet or DocBin id is turned back into an integer
    where its ``id_type`` says so), ``ents`` and, if written, ``text``. DocBin outputs give
    ``id`` and ``ents``. Files whose names start with ``_`` or ``.`` are not records."""
    path = Path(path)
    shape = shape_of(path)
    fmt = OUTPUTS[output_format or shape.format_of(path)]
    files = [p for p in shape.files(path) if p.suffix.lower() in fmt.extensions and not p.name.startswith(("_", "."))]
    return [record for file in files for record in fmt.read(file)]


def _reject_order(r: Dict[str, Any]) -> Tuple[str, int, str]:
    return r["source"], r["line"] if r["line"] is not None else -1, str(r["id"])


def write_rejects(path: Path, rejects: List[Dict[str, Any]]) -> None:
    """The rejects as one JSON Lines file, sorted by source and line (empty if none).
    A reject whose id UTF-8 cannot hold (a lone surrogate) is written with JSON's
    ``\\uXXXX`` escapes, so it names the record as the input did."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for reject in sorted(rejects, key=_reject_order):
            try:
                line = json.dumps(reject, ensure_ascii=False).encode("utf8")
            except UnicodeEncodeError:
                line = json.dumps(reject).encode("ascii")
            f.write(line + b"\n")

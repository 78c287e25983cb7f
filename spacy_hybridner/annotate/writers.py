"""The local engine's writers of the output formats (at the run's temporary output), and
the fixed Arrow schema of the records (:func:`records_table`) that Parquet output has in
both engines. :mod:`.outputs` re-exports them: its format objects hand out these writers."""

from pathlib import Path
from typing import Any, Dict, List

from .records import id_columns


class OutputWriter:
    """Writes the encoded batches of one format in this process (the local engine)."""

    def write(self, encoded) -> None:
        """Write one encoded batch."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output (an input without valid records still gives a valid output)."""
        raise NotImplementedError


def records_table(records: List[Dict[str, Any]], include_text: bool):
    """The output records as an Arrow table with a fixed schema: ``id`` (string),
    ``id_type`` ("string" or "integer"), ``ents`` and, with include_text, ``text``. An
    empty ``ents`` list keeps its type, so every shard has the same schema."""
    import pyarrow as pa

    ent = pa.struct(
        [
            ("start_char", pa.int64()),
            ("end_char", pa.int64()),
            ("label", pa.string()),
            ("text", pa.string()),
            ("confidence", pa.float64()),
        ]
    )
    ids, id_types = id_columns([r["id"] for r in records])
    columns = {
        "id": pa.array(ids, pa.string()),
        "id_type": pa.array(id_types, pa.string()),
        "ents": pa.array([r["ents"] for r in records], pa.list_(ent)),
    }
    if include_text:
        columns["text"] = pa.array([r["text"] for r in records], pa.string())
    return pa.table(columns)


class JsonLinesWriter(OutputWriter):
    """One JSON Lines file: the encoded lines, appended."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close())

    def write(self, encoded: bytes) -> None:
        self._file.write(encoded)

    def close(self) -> None:
        self._file.close()


class ParquetWriter(OutputWriter):
    """One Parquet file, a row group per non-empty batch (no valid records: an empty file
    with the schema of :func:`records_table`)."""

    def __init__(self, path: Path, include_text: bool) -> None:
        self.path, self.include_text = path, include_text
        self._parquet = None

    def write(self, encoded) -> None:
        import pyarrow.parquet as pq

        if encoded.num_rows == 0:
            return
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, encoded.schema)
        self._parquet.write_table(encoded)

    def close(self) -> None:
        if self._parquet is None:
            import pyarrow.parquet as pq

            pq.write_table(records_table([], self.include_text), self.path)
        else:
            self._parquet.close()


class DocBinShardWriter(OutputWriter):
    """A folder of DocBin shards, ``part-00000.spacy``, ... of ``shard_size`` docs each."""

    def __init__(self, path: Path, shard_size: int) -> None:
        self.path, self.shard_size = path, shard_size
        self._docs: List[Any] = []
        self._vocab = None
        self._n_shards = 0
        path.mkdir(parents=True)

    def write(self, encoded: bytes) -> None:
        from spacy.tokens import DocBin
        from spacy.vocab import Vocab

        if self._vocab is None:
            self._vocab = Vocab()  # a fresh one per shard: its strings do not pile up
        self._docs.extend(DocBin(store_user_data=True).from_bytes(encoded).get_docs(self._vocab))
        while len(self._docs) >= self.shard_size:
            self._flush_shard(self.shard_size)

    def _flush_shard(self, n: int) -> None:
        from spacy.tokens import DocBin

        db = DocBin(store_user_data=True, docs=self._docs[:n])
        (self.path / f"part-{self._n_shards:05d}.spacy").write_bytes(db.to_bytes())
        self._docs = self._docs[n:]
        self._n_shards += 1
        if not self._docs:
            self._vocab = None

    def close(self) -> None:
        if self._docs:
            self._flush_shard(len(self._docs))

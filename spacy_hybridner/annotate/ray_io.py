"""The Ray engine's reader and writers (Ray Data datasource, datasink and shard names).

Imported only when the Ray engine runs (it needs the ``ray`` extra), which is why these
classes live apart from :mod:`.ray_engine`, whose actor class the package exports.
"""

from typing import Any, List

from ray.data.datasource import BlockBasedFileDatasink, FileBasedDatasource, FilenameProvider

from .inputs import INPUTS
from .records import RecordSettings


class InputDatasource(FileBasedDatasource):
    """Ray Data reader of the input files, giving the same columns as the local engine's
    reader (line or row numbers included, so ids and rejects name records alike), one
    block per batch of ``rows_per_block`` records: Ray Data hands a whole block to one
    actor, so blocks as large as a file would leave the other actors idle on a one-file
    corpus. Parquet is read here too rather than by read_parquet: in Ray 2.60 that lists
    files in a task needing a CPU, which never starts while the actor pool holds every
    CPU (--workers = the cluster's CPUs)."""

    def __init__(self, paths: List[str], settings: RecordSettings, rows_per_block: int) -> None:
        super().__init__(paths)
        self._input_settings = settings
        self._rows_per_block = rows_per_block

    def _read_stream(self, f, path: str):
        settings = self._input_settings
        yield from INPUTS[settings.fmt].tables(path, f, settings, self._rows_per_block)


class ShardNames(FilenameProvider):
    """``part-UUID-000000.EXT``: the name of each write task's shard."""

    def __init__(self, ext: str) -> None:
        self.ext = ext

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"part-{write_uuid}-{task_index:06d}.{self.ext}"


class BytesDatasink(BlockBasedFileDatasink):
    """One shard per write task of the encoded batches of a bytes format (JSON Lines,
    DocBin: :class:`~.outputs.BytesFormat`), in the column named after the format."""

    def __init__(self, path: str, output_format: Any) -> None:
        """output_format: the :class:`~.outputs.BytesFormat` whose ``write_shard`` writes
        the shard (given by that format itself, so this module does not import it)."""
        super().__init__(path, file_format=output_format.ext, filename_provider=ShardNames(output_format.ext))
        self._output_format = output_format

    def write_block_to_file(self, block: Any, file) -> None:
        chunks = block.to_arrow().column(self._output_format.name).to_pylist()
        self._output_format.write_shard(chunks, file)

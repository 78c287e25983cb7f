"""Publishing a run's outputs whole or not at all.

A run writes OUTPUT, its rejects file and its manifest under temporary names beside them
(:func:`temporary_path`: ``.NAME._temporary``) and renames them into place only when it has
completed (OUTPUT last; a folder gets a ``_SUCCESS`` file). An interrupted or failed run
removes its temporaries; the temporaries a killed run left are refused without ``--overwrite``.
"""
import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from .errors import AnnotateInputError, AnnotateRunError
from .outputs import shape_of


def default_rejects_path(output: Path) -> Path:
    """``out.jsonl`` -> ``out.jsonl.rejects.jsonl``, ``out.parquet`` ->
    ``out.parquet.rejects.jsonl``, a folder ``out`` -> ``out.rejects.jsonl``: each
    output its own rejects file, next to it."""
    return output.with_name(output.name + ".rejects.jsonl")


def manifest_path(output: Path) -> Path:
    """``out.jsonl`` -> ``out.jsonl.manifest.json``; a folder ``out`` -> ``out.manifest.json``."""
    return output.with_name(output.name + ".manifest.json")


def temporary_path(path: Path) -> Path:
    """Where a run writes ``path`` until it publishes it: ``.NAME._temporary`` beside it
    (hidden, and not matched by ``*.jsonl`` or a Parquet dataset reader)."""
    return path.with_name(f".{path.name}._temporary")


def _names(paths: List[Path]) -> str:
    return ", ".join(map(str, paths))


def _exist(paths: List[Path]) -> str:
    return "exists" if len(paths) == 1 else "exist"


def _them(paths: List[Path]) -> str:
    return "it" if len(paths) == 1 else "them"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@dataclass
class OutputPaths:
    """The files a run publishes: OUTPUT (a file or a folder of shards), its rejects file
    and its manifest, each written under :func:`temporary_path` until the run completes."""

    output: Path
    rejects: Path
    manifest: Path

    def finals(self) -> List[Path]:
        return [self.output, self.rejects, self.manifest]

    def temporaries(self) -> List[Path]:
        return [temporary_path(p) for p in self.finals()]

    def output_files(self) -> List[str]:
        """The files of the temporary OUTPUT as the manifest lists them: a file's own
        name, a folder's shards relative to it."""
        tmp_output = temporary_path(self.output)
        return shape_of(tmp_output).names(tmp_output)

    def prepare(self, overwrite: bool) -> None:
        """Refuse to replace an existing output, rejects file or manifest, or the
        temporaries of another run, unless ``overwrite``. With ``overwrite`` the old
        temporaries go now and the old outputs when the new ones are published, so a
        failed rerun leaves the previous complete output in place."""
        if len({p.resolve() for p in self.finals()}) < 3:
            raise AnnotateInputError(f"OUTPUT and --rejects must differ from each other and from {self.manifest}.")
        temporaries = [p for p in self.temporaries() if p.exists() or p.is_symlink()]
        existing = [p for p in self.finals() if p.exists() or p.is_symlink()]
        if temporaries and not overwrite:
            raise AnnotateInputError(
                f"{_names(temporaries)} already {_exist(temporaries)}: the temporaries of a run that was killed "
                f"(or of one still running). Pass --overwrite to remove them and rerun, or choose another OUTPUT.")
        if existing and not overwrite:
            raise AnnotateInputError(
                f"{_names(existing)} already {_exist(existing)}: remove {_them(existing)}, choose another OUTPUT "
                f"(or --rejects), or pass --overwrite to replace {_them(existing)} when this run completes.")
        for path in temporaries:
            _remove(path)
        for path in self.finals():
            path.parent.mkdir(parents=True, exist_ok=True)

    def discard(self) -> None:
        """Remove the temporaries (an interrupted or failed run): nothing is published."""
        for path in self.temporaries():
            with contextlib.suppress(OSError):
                _remove(path)

    def publish(self, manifest: Dict[str, Any], overwrite: bool) -> None:
        """Write the manifest and rename everything into place: the rejects file, the
        manifest, then OUTPUT last, so that OUTPUT exists only once the run is complete
        (``os.replace`` is atomic within a file system). A folder OUTPUT also gets
        ``_SUCCESS``, as Hadoop and Spark jobs mark theirs."""
        tmp_output, tmp_rejects, tmp_manifest = self.temporaries()
        shape_of(tmp_output).mark_complete(tmp_output)
        with open(tmp_manifest, "w", encoding="utf8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
            f.write("\n")
        existing = [p for p in self.finals() if p.exists() or p.is_symlink()]
        if existing and not overwrite:
            raise AnnotateRunError(f"{_names(existing)} appeared during this run (another run writing the same "
                                   f"OUTPUT?): nothing was replaced. Rerun with --overwrite to replace "
                                   f"{_them(existing)}.")
        for path in existing:
            _remove(path)
        os.replace(tmp_rejects, self.rejects)
        os.replace(tmp_manifest, self.manifest)
        os.replace(tmp_output, self.output)


def prepare_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing OUTPUT unless ``overwrite`` (see :meth:`OutputPaths.prepare`)."""
    OutputPaths(path, default_rejects_path(path), manifest_path(path)).prepare(overwrite)

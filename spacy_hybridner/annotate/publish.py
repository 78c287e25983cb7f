"""Publishing a run's outputs whole or not at all, one run per OUTPUT at a time, never over its input.

A run takes a lock on OUTPUT (:class:`OutputLock`: ``.NAME.lock`` beside it), writes OUTPUT,
its rejects file and its manifest under temporary names beside them (:func:`temporary_path`:
``.NAME._temporary``) and renames them into place only when it has completed (the manifest
last; a folder gets a ``_SUCCESS`` file). An interrupted or failed run removes its
temporaries; the temporaries a killed run left are refused without ``--overwrite``. Paths
that are, or hold, an input are refused (:meth:`OutputPaths.refuse_inputs`).
"""

import contextlib
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import AnnotateInputError, AnnotateRunError
from .inputs import is_within, path_key
from .outputs import shape_of

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs are not locked
    fcntl = None


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


def lock_path(output: Path) -> Path:
    """The lock file of a run writing ``output``: ``.NAME.lock`` beside it."""
    return output.with_name(f".{output.name}.lock")


def os_error_text(e: OSError, path: Optional[Path] = None) -> str:
    """ "PATH: the system's reason" of an OSError (``path`` where the error names no file)."""
    where = e.filename if e.filename is not None else path
    why = e.strerror or (os.strerror(e.errno) if e.errno else None) or str(e).strip().split("\n")[0] or type(e).__name__
    return f"{where}: {why}" if where is not None else why


class OutputLock:
    """An exclusive lock on OUTPUT for one run: ``fcntl.flock`` on :func:`lock_path`, held
    for the whole run, the holder's PID in the file. The kernel releases it when its process
    ends, however it ends (SIGKILL included), so a lock file left by a killed run does not
    block the next one; a run that ends normally removes the file. Not POSIX (Windows): no lock."""

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path = lock_path(self.output)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock, or raise AnnotateInputError naming the run (its PID) that holds
        it; an OSError if the lock file cannot be created (the folder cannot be written)."""
        if fcntl is None or self._fd is not None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                raise AnnotateInputError(
                    f"another annotate run (PID {holder or 'unknown'}) is writing {self.output}: it holds "
                    f"{self.path}. Wait until it ends, or choose another OUTPUT."
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder before us removes the file as it ends: if it did between our open
            # and our lock, we hold a lock on a file nobody else will open. Take the new one.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            locked = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (locked.st_dev, locked.st_ino):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and release the lock (removed first, while still held, so
        that no other run can lock the file that is going away)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


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

    def owned(self) -> List[Path]:
        """Every path this run writes (a folder: with all it holds): the outputs, their
        temporaries and the lock. None of them is ever read as input."""
        return self.finals() + self.temporaries() + [lock_path(self.output)]

    def refuse_inputs(self, input_path: str, files: List[Path]) -> None:
        """Raise AnnotateInputError if OUTPUT, the rejects file or the manifest is an input
        file or folder (the same name, or the same file by another name: a link), or holds
        one (an OUTPUT folder, which publishing replaces), with or without ``--overwrite``."""
        inputs = list(files) + ([Path(input_path)] if Path(input_path).is_dir() else [])
        names = {"OUTPUT": self.output, "--rejects": self.rejects, "the manifest": self.manifest}
        for what, target in names.items():
            target_key = path_key(target)
            for source in inputs:
                same = path_key(source) == target_key
                if not same and target.exists():
                    with contextlib.suppress(OSError):
                        same = os.path.samefile(source, target)
                kind = "folder" if source.is_dir() else "file"
                if same:
                    problem = f"{what} {target} is the input {kind} {source}"
                elif is_within(path_key(source), target_key):
                    problem = f"{what} {target} holds the input {kind} {source}"
                else:
                    continue
                raise AnnotateInputError(
                    f"{problem}: the run would replace its own input. Choose {what} outside the input."
                )

    def output_files(self) -> List[str]:
        """The files of OUTPUT as the manifest lists them (read from the temporary OUTPUT,
        named as published): a file's own name, a folder's shards relative to it."""
        tmp_output = temporary_path(self.output)
        shape = shape_of(tmp_output)
        return shape.names(tmp_output) if tmp_output.is_dir() else [self.output.name]

    def make_folders(self) -> None:
        """Create the folders of OUTPUT, the rejects file and the manifest, or raise
        AnnotateInputError naming the path and the system's reason (exit status 2)."""
        for path in self.finals():
            parent = path.parent
            try:
                for folder in [parent, *parent.parents]:
                    if folder.exists() and not folder.is_dir():
                        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
                    if folder.exists():
                        break
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise AnnotateInputError(f"cannot write {path}: {os_error_text(e, parent)}.") from e

    def prepare(self, overwrite: bool) -> None:
        """Refuse to replace an existing output, rejects file or manifest, or the
        temporaries of a killed run, unless ``overwrite``. With ``overwrite`` the old
        temporaries go now and the old outputs when the new ones are published, so a
        failed rerun leaves the previous complete output in place. Call it holding the
        :class:`OutputLock`, so that the temporaries are not those of a run still going.
        A folder that cannot be written is an AnnotateInputError (exit status 2)."""
        if len({path_key(p) for p in self.finals()}) < 3:
            raise AnnotateInputError(f"OUTPUT and --rejects must differ from each other and from {self.manifest}.")
        temporaries = [p for p in self.temporaries() if p.exists() or p.is_symlink()]
        existing = [p for p in self.finals() if p.exists() or p.is_symlink()]
        if temporaries and not overwrite:
            raise AnnotateInputError(
                f"{_names(temporaries)} already {_exist(temporaries)}: the temporaries of a run that was killed. "
                f"Pass --overwrite to remove {_them(temporaries)} and rerun, or choose another OUTPUT."
            )
        if existing and not overwrite:
            raise AnnotateInputError(
                f"{_names(existing)} already {_exist(existing)}: remove {_them(existing)}, choose another OUTPUT "
                f"(or --rejects), or pass --overwrite to replace {_them(existing)} when this run completes."
            )
        self.make_folders()
        try:
            for path in temporaries:
                _remove(path)
            # Create the rejects file's temporary now: a folder that cannot be written fails
            # here, before the run, rather than when the rejects are written at its end.
            temporary_path(self.rejects).write_bytes(b"")
        except OSError as e:
            self.discard()
            raise AnnotateInputError(f"cannot write: {os_error_text(e)}.") from e

    def discard(self) -> None:
        """Remove the temporaries (an interrupted or failed run): nothing is published."""
        for path in self.temporaries():
            with contextlib.suppress(OSError):
                _remove(path)

    def publish(self, manifest: Dict[str, Any], overwrite: bool) -> None:
        """Write the manifest and rename everything into place: the rejects file, OUTPUT,
        then the manifest last, so that a manifest always has its output (``os.replace``
        is atomic within a file system). A folder OUTPUT also gets ``_SUCCESS``, as Hadoop
        and Spark jobs mark theirs. If a rename fails, what this call published is removed
        again: nothing is published (AnnotateRunError, or the OSError)."""
        tmp_output, tmp_rejects, tmp_manifest = self.temporaries()
        missing = [p for p in (tmp_output, tmp_rejects) if not p.exists()]
        if missing:
            raise AnnotateRunError(
                f"{_names(missing)} vanished before the run could publish {_them(missing)} "
                f"(removed by another program?): nothing was published. Rerun the command."
            )
        shape_of(tmp_output).mark_complete(tmp_output)
        with open(tmp_manifest, "w", encoding="utf8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
            f.write("\n")
        existing = [p for p in self.finals() if p.exists() or p.is_symlink()]
        if existing and not overwrite:
            raise AnnotateRunError(
                f"{_names(existing)} appeared during this run (written by a program that does "
                f"not take annotate's lock?): nothing was replaced. Rerun with --overwrite to "
                f"replace {_them(existing)}."
            )
        # The old manifest first: no manifest ever describes a half-replaced OUTPUT.
        for path in sorted(existing, key=lambda p: p != self.manifest):
            _remove(path)
        published: List[Path] = []
        try:
            for temporary, final in (
                (tmp_rejects, self.rejects),
                (tmp_output, self.output),
                (tmp_manifest, self.manifest),
            ):
                os.replace(temporary, final)
                published.append(final)
        except BaseException:
            for path in published:
                with contextlib.suppress(OSError):
                    _remove(path)
            raise


def prepare_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing OUTPUT unless ``overwrite`` (see :meth:`OutputPaths.prepare`)."""
    OutputPaths(path, default_rejects_path(path), manifest_path(path)).prepare(overwrite)

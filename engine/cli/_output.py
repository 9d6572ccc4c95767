"""Output folders the CLI can trust: checked before computing, files written atomically, runs
recorded so that a folder never mixes files of two runs without saying so.

- :func:`check_writable` creates the folder and a probe file (then removes it) before any
  computing: an unwritable ``--out`` is reported at once, not after minutes of work.
- Every file is written to a temporary name in the same folder and moved into place with
  ``os.replace`` (:func:`atomic_write`): a reader never sees half a PNG, .npy or JSON.
- :class:`RunRecord`: each run has a JSON record (``summary.json`` for ``onnxplain explain``,
  ``<image>_<method>.json`` for one method). Starting a run deletes the files the previous
  record in that folder lists (only those: files onnxplain wrote; nothing else is touched),
  then writes the record with ``"complete": false``; it is rewritten as files are added and
  finally, last of all, with ``"complete": true``. A folder holding a record with
  ``"complete": false`` holds an interrupted run, and only that run's files.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
import time
from typing import Any, Callable

import numpy as np

from ..errors import OutputError


def check_writable(folder: str | os.PathLike, flag: str = "--out") -> pathlib.Path:
    """Create ``folder`` if needed and prove it writable with a probe file (created, then removed)."""
    path = pathlib.Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".onnxplain-probe-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputError(f"{flag} {str(folder)!r} is not a writable folder: {exc.strerror or exc}"
                          f"{f' ({exc.filename})' if exc.filename else ''}.") from None
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """Call ``write(tmp)`` for a temporary file beside ``path`` (same suffix), then move it into place."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return str(path)


def atomic_text(path: str | os.PathLike, text: str) -> str:
    """Write a UTF-8 text file atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return atomic_write(path, write)


def atomic_npy(path: str | os.PathLike, array: np.ndarray) -> str:
    """Write a .npy file atomically (no pickles)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)
    return atomic_write(path, write)


def atomic_json(path: str | os.PathLike, data: Any) -> str:
    """Write indented JSON atomically (numpy scalars and other objects as str)."""
    return atomic_text(path, json.dumps(data, indent=1, default=_default) + "\n")


def _default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


class RunRecord:
    """The JSON record of one run in an output folder (see the module notes)."""

    def __init__(self, folder: str | os.PathLike, name: str, **info: Any) -> None:
        self.folder = pathlib.Path(folder)
        self.path = self.folder / name
        self.files: list[str] = []
        self.info = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}

    def start(self) -> "RunRecord":
        """Delete the previous run's files (as its record lists them), then record this run as incomplete."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self._previous_files():
            try:
                os.remove(old)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise OutputError(f"cannot remove {str(old)!r}, a file of an earlier run in "
                                  f"{str(self.folder)!r}: {exc.strerror or exc}.") from None
            parent = old.parent
            while parent != self.folder and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()  # a sub-folder the earlier run made (report/) goes once empty
                parent = parent.parent
        self._write(complete=False)
        return self

    def add(self, *paths: str) -> None:
        """Record files written by this run (the record is rewritten, still incomplete)."""
        self.files += [self._relative(p) for p in paths]  # paths inside this folder (report/ pictures too)
        self._write(complete=False)

    def finish(self, data: dict[str, Any] | None = None) -> str:
        """Write the record last, with ``"complete": true`` and the run's results ``data``."""
        return self._write(complete=True, data=data)

    def _relative(self, path: str | os.PathLike) -> str:
        p = pathlib.Path(path)
        p = p if p.is_absolute() else pathlib.Path.cwd() / p
        try:
            return p.resolve().relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            raise OutputError(f"{str(path)!r} is outside the output folder {str(self.folder)!r}.") from None

    def _write(self, *, complete: bool, data: dict[str, Any] | None = None) -> str:
        record = {**(data or {}), **self.info, "complete": complete,
                  "files": sorted(set(self.files) | {self.path.name})}
        return atomic_json(self.path, record)

    def _previous_files(self) -> list[pathlib.Path]:
        """Files the folder's earlier record lists, inside the folder only (the record itself last)."""
        if not self.path.exists():
            return []
        try:
            old = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return [self.path]  # unreadable: only the record itself is replaced
        files = old.get("files", []) if isinstance(old, dict) else []
        keep: list[pathlib.Path] = []
        for f in files if isinstance(files, list) else []:
            parts = pathlib.PurePosixPath(f).parts if isinstance(f, str) else ()
            if not parts or f.startswith("/") or any(part in (".", "..") for part in parts):
                continue  # a record names files inside its own folder only
            p = self.folder.joinpath(*parts)
            if any(q.is_symlink() for q in (p, *p.parents) if q != self.folder and self.folder in q.parents):
                continue  # never follow a link out of the folder
            # a plain file of that run (a symbolic link is not followed, a folder never removed)
            if p.is_file() and not p.is_symlink() and p != self.path:
                keep.append(p)
        return keep + [self.path]

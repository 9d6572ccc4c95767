"""Class names and label resolution (index or name, with close-match suggestions)."""
from __future__ import annotations

import difflib
import json
import numbers
import os
import pathlib
from typing import Any, Sequence

from .errors import LabelError


def confined_path(name: Any, folder: str | os.PathLike, *, where: str) -> str:
    """The file ``name`` (a path that came from a model file or its manifest) inside ``folder``.

    Relative paths are resolved from ``folder`` (the model's folder), never from the current
    folder; the resolved path (symbolic links followed) must stay inside ``folder``, so a
    model cannot make onnxplain read ``/etc/passwd``, ``/proc/self/environ`` or ``../secret``.

    Raises
    ------
    LabelError
        If ``name`` is not a string or leaves ``folder``.
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise LabelError(f"{where}: a labels path must be a non-empty file name; got {name!r}.")
    base = pathlib.Path(folder).resolve()
    candidate = (base / name).resolve()
    if not candidate.is_relative_to(base):
        raise LabelError(f"{where} names the file {name!r}, which resolves to {str(candidate)!r} outside the "
                         f"model's folder {str(base)!r}; paths from a model file or manifest must stay inside the "
                         "model's folder (pass labels= yourself to use another file).")
    return str(candidate)


def read_labels(source: Any, *, where: str = "labels", folder: str | os.PathLike | None = None) -> list[str]:
    """Class names from a list, a .txt file (one per line) or a .json file (a list).

    ``folder`` is given for sources that came from a model file or manifest: a path is then
    resolved inside that folder (see :func:`confined_path`).
    """
    if folder is not None and isinstance(source, (str, os.PathLike)):
        source = confined_path(os.fspath(source), folder, where=where)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise LabelError(f"labels file {path!r} does not exist.")
        if not os.path.isfile(path):
            raise LabelError(f"labels file {path!r} is not a file; expected a .txt (one name per line) or .json list.")
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except UnicodeDecodeError as exc:
            raise LabelError(f"labels file {path!r} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
        except OSError as exc:
            raise LabelError(f"labels file {path!r} cannot be read: {exc.strerror or exc}.") from None
        if path.endswith(".json"):
            try:
                source = json.loads(text)
            except json.JSONDecodeError as exc:
                raise LabelError(f"labels file {path!r} is not valid JSON: {exc}") from None
        else:
            source = [line.strip() for line in text.splitlines() if line.strip()]
        where = f"labels file {path!r}"
    if isinstance(source, dict):
        try:
            keys = {int(k): k for k in source}
        except (TypeError, ValueError):
            keys = {}
        if len(keys) != len(source) or sorted(keys) != list(range(len(source))):
            raise LabelError(f"{where}: a mapping must have integer keys 0..C-1 (each once); got keys "
                             f"{sorted(map(str, source))[:5]}{' ...' if len(source) > 5 else ''}.")
        source = [source[keys[i]] for i in range(len(source))]
    if not isinstance(source, (list, tuple)) or not all(isinstance(s, str) for s in source):
        raise LabelError(f"{where} must be a list of class-name strings.")
    names = [str(s) for s in source]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise LabelError(f"{where}: class names must be unique; repeated: {dup}.")
    return names


def resolve_label(label: Any, class_names: Sequence[str]) -> int:
    """Return the class index for an index or a class name.

    Raises
    ------
    LabelError
        If an index is out of range or a name is unknown (the message lists close matches).
    """
    n = len(class_names)
    if isinstance(label, numbers.Integral) and not isinstance(label, bool):
        idx = int(label)
        if not 0 <= idx < n:
            raise LabelError(f"label index {idx} is out of range; the model has {n} classes (0..{n - 1}).")
        return idx
    if isinstance(label, str):
        if label in class_names:
            return list(class_names).index(label)
        lowered = {name.lower(): i for i, name in enumerate(class_names)}
        if label.lower() in lowered:
            return lowered[label.lower()]
        if label.strip().lstrip("-").isdigit():
            return resolve_label(int(label), class_names)
        close = difflib.get_close_matches(label, list(class_names), n=5, cutoff=0.6)
        if label.strip():
            close += [c for c in class_names if label.lower() in c.lower() and c not in close][: 5 - len(close)]
        hint = (f" Close matches: {', '.join(repr(c) for c in close)}." if close else
                f" Expected a class index 0..{n - 1} or one of the model's {n} class names.")
        raise LabelError(f"unknown label {label!r}.{hint}")
    raise LabelError(f"label must be a class index or a class name; got {label!r} ({type(label).__name__}).")

"""Class names and label resolution (index or name, with close-match suggestions)."""
from __future__ import annotations

import difflib
import json
import numbers
import os
from typing import Any, Sequence

from .errors import LabelError


def read_labels(source: Any, *, where: str = "labels") -> list[str]:
    """Class names from a list, a .txt file (one per line) or a .json file (a list)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise LabelError(f"labels file {path!r} does not exist.")
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
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
            source = [source[k] for k in sorted(source, key=int)]
        except (TypeError, ValueError):
            raise LabelError(f"{where}: a mapping must have integer keys 0..C-1.") from None
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
        close += [c for c in class_names if label.lower() in c.lower() and c not in close][: 5 - len(close)]
        hint = f" Close matches: {', '.join(repr(c) for c in close)}." if close else ""
        raise LabelError(f"unknown label {label!r}.{hint}")
    raise LabelError(f"label must be a class index or a class name; got {label!r} ({type(label).__name__}).")

"""Work limits: sample/mask/step counts far beyond any useful explanation are refused at once.

A call that would run more than :data:`MAX_EVALUATIONS` model evaluations (forward passes of
one image; a gradient run counts as one) is refused with a WorkLimitError that states the
estimated time (from a timed forward pass of the model on this machine) and memory, unless
the caller passes ``allow_long=True`` (CLI ``--allow-long``). The bound is 100,000: 25 times
RISE's 4000 masks and 50 times LIME's 2048 samples, a few minutes for a small model on two
CPU cores and hours for a large one. Whatever is allowed, a run can be interrupted
(KeyboardInterrupt / Ctrl-C between mini-batches); nothing is written as if complete.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import OptionTypeError, WorkLimitError

#: Largest number of model evaluations one call runs without ``allow_long=True``.
MAX_EVALUATIONS = 100_000


def check_allow_long(allow_long: Any) -> bool:
    if not isinstance(allow_long, (bool, np.bool_)):
        raise OptionTypeError(f"The 'allow_long' parameter must be True or False; got {allow_long!r}.")
    return bool(allow_long)


def check_work(model: Any, what: str, evaluations: int, *, allow_long: bool, memory_bytes: float = 0.0,
               environment: str | None = None) -> None:
    """Raise WorkLimitError when ``evaluations`` exceeds the bound and ``allow_long`` is False.

    ``what`` names the option(s) that set the count (e.g. "num_samples=10000000").
    """
    if allow_long or evaluations <= MAX_EVALUATIONS:
        return
    seconds = _seconds_per_image(model, environment)
    eta = "unknown time" if seconds is None else f"about {_duration(evaluations * seconds)}"
    memory = f" and {_size(memory_bytes)} of memory" if memory_bytes > 2 ** 27 else ""
    raise WorkLimitError(f"{what} means {evaluations:,} model evaluations, above the work bound of "
                         f"{MAX_EVALUATIONS:,}: {eta}{memory} on this machine. Use fewer, or pass "
                         "allow_long=True (CLI --allow-long) to run it anyway (Ctrl-C stops it).")


def _seconds_per_image(model: Any, environment: str | None) -> float | None:
    """Seconds per image of a forward pass at batch 8 (timed once per model and environment, after a warm-up)."""
    size = getattr(model, "input_size", None)
    if size is None:
        return None
    cache = model.__dict__.setdefault("_seconds_per_image", {})
    key = environment or model.execution_environment
    if key not in cache:
        x = model.to_native(np.full((8, *size, 3), 127.0, np.float32))
        model.run_native(x[:1], environment=environment)
        t = time.perf_counter()
        model.run_native(x, environment=environment)
        cache[key] = (time.perf_counter() - t) / 8
    return cache[key]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _size(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"

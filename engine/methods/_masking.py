"""Pieces the forward-only masking methods (occlusion, RISE, LIME) share: fill values, the
batch loop that streams synthetic batches through the model, and their batch buffers.

Batch buffers (:func:`batch_buffers`): a mini-batch of 128 synthetic 224 x 224 images is a
77 MB array, above glibc's largest mmap threshold, so every call maps fresh pages and
faults them in again as it fills them: measured 30-55 ms per buffer against 13-16 ms to
rewrite a kept one, 3-5 % of an occlusion call at 169 windows (two buffers). Within
:func:`keep_batch_buffers` (a dataset run: many calls of the same shapes one after the
other) a call's buffers are kept for the next call; outside it (one explanation) they are
freed when the call returns, as before, so a single call's memory after it is unchanged."""
from __future__ import annotations

import contextlib
import numbers
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from ..errors import OptionError, OptionTypeError
from ..model import Model


def resolve_fill(name: str, value: Any, pixels: np.ndarray | None, *, mean_word: str) -> np.ndarray | None:
    """A fill value in RGB pixel units, float32 (3,): ``mean_word`` (per-channel image mean),
    "zero" (only where ``mean_word`` is "mean", i.e. RISE), a number, or three numbers.
    With ``pixels=None`` the value is only validated (returns None for the mean)."""
    if isinstance(value, str):
        if value == mean_word:
            if pixels is None:
                return None
            return pixels.reshape(-1, 3).astype(np.float64).mean(axis=0).astype(np.float32)
        if value == "zero" and mean_word == "mean":
            return np.zeros(3, dtype=np.float32)
        words = (mean_word, "zero") if mean_word == "mean" else (mean_word,)
        listed = ", ".join(repr(w) for w in words)
        raise OptionError(f"The {name!r} parameter must be one of {{{listed}}}, a number or 3 numbers (R, G, B) "
                         f"in pixel units; got {value!r}.")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        values = [float(value)] * 3
    else:
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError):
            raise OptionTypeError(f"The {name!r} parameter must be {mean_word!r}, a number or 3 numbers (R, G, B); "
                            f"got {value!r}.") from None
        if len(values) != 3:
            raise OptionError(f"The {name!r} parameter must have 3 values (R, G, B); got {len(values)}.")
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise OptionError(f"The {name!r} parameter must be finite; got {values}.")
    return arr.astype(np.float32)


def stream(model: Model, environment: str, total: int, batch: int, write: Callable[[int, int, int], np.ndarray],
           consume: Callable[[int, int, np.ndarray, int], None], progress: Callable[[int, int], None] | None,
           timings: dict[str, float], source: str | None = None) -> None:
    """Run ``total`` synthetic samples through the model ``batch`` at a time.

    ``write(start, n, slot)`` fills and returns the native batch of samples start..start+n-1
    in buffer ``slot`` (0 or 1); ``consume(start, n, scores, slot)`` takes their (n,
    num_classes) scores. The next batch is written in a helper thread while the model runs
    on this one (ONNX Runtime and the numba kernels release the GIL), alternating the two
    slots: ``write`` calls run one at a time and in order, ``consume`` calls in order on the
    calling thread, and a slot is rewritten only after its batch was consumed. Time the
    calling thread waits for ``write`` plus time in ``consume`` is added to
    ``timings["masking"]``, time in the model to ``timings["inference"]``.
    """
    starts = list(range(0, total, batch))
    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxplain-masks") as pool:
        pending = pool.submit(write, 0, min(batch, total), 0)
        for i, start in enumerate(starts):
            n = min(batch, total - start)
            t0 = time.perf_counter()
            x = pending.result()
            if i + 1 < len(starts):   # the other slot: its batch (i - 1) was consumed last round
                nxt = starts[i + 1]
                pending = pool.submit(write, nxt, min(batch, total - nxt), (i + 1) % 2)
            t1 = time.perf_counter()
            scores = model.scores_native(x, environment=environment, source=source)
            t2 = time.perf_counter()
            consume(start, n, scores, i % 2)
            t3 = time.perf_counter()
            timings["masking"] += (t1 - t0) + (t3 - t2)
            timings["inference"] += t2 - t1
            if progress is not None:
                progress(start + n, total)


# ---- batch buffers ------------------------------------------------------------------------
_KEEP = {"depth": 0}
_KEPT: dict[tuple, list[np.ndarray]] = {}       # (shape, dtype) -> free arrays, while kept
_KEPT_LOCK = threading.Lock()
_KEPT_KEYS = 2                                   # shapes kept at most (e.g. occlusion's and RISE's)


@contextlib.contextmanager
def keep_batch_buffers() -> Iterator[None]:
    """Inside: :func:`batch_buffers` reuses the arrays earlier calls gave back (module notes);
    on leaving the outermost one, every kept array is dropped."""
    with _KEPT_LOCK:
        _KEEP["depth"] += 1
    try:
        yield
    finally:
        with _KEPT_LOCK:
            _KEEP["depth"] -= 1
            if _KEEP["depth"] == 0:
                _KEPT.clear()


@contextlib.contextmanager
def batch_buffers(shape: tuple[int, ...], dtype: Any, count: int) -> Iterator[list[np.ndarray]]:
    """``count`` uninitialised C-contiguous arrays of ``shape`` and ``dtype`` for one call.
    Within :func:`keep_batch_buffers` they are taken from, and given back to, the kept ones
    (a caller has them to itself until it gives them back: concurrent calls never share)."""
    key = (tuple(int(v) for v in shape), np.dtype(dtype))
    with _KEPT_LOCK:
        kept = _KEPT.pop(key, []) if _KEEP["depth"] else []
    arrays = kept[:count] + [np.empty(key[0], key[1]) for _ in range(count - len(kept[:count]))]
    try:
        yield arrays
    finally:
        with _KEPT_LOCK:
            if _KEEP["depth"]:
                _KEPT.pop(key, None)
                _KEPT[key] = arrays                   # most recent last
                while len(_KEPT) > _KEPT_KEYS:
                    del _KEPT[next(iter(_KEPT))]

"""Thread settings of a bench worker process: one count for ONNX Runtime, torch, numba and BLAS.

onnxplain has no session-options argument (sessions are created deep inside the model
layer and the gradient engine), so the bench wraps ``onnxruntime.InferenceSession`` in
its own worker processes: every session gets ``intra_op_num_threads = threads`` (unless
the caller chose a count) and the requested ``session.intra_op.allow_spinning``. This
touches onnxruntime only, never engine internals, and only in bench subprocesses.
"""
from __future__ import annotations

import os

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def environment(threads: int) -> dict[str, str]:
    """Environment variables for a worker subprocess (read by libraries at import time)."""
    return {name: str(threads) for name in THREAD_VARS}


def configure(threads: int, spinning: bool) -> None:
    """Apply the thread count and spinning policy to every ORT session this process creates."""
    import onnxruntime as ort

    base = ort.InferenceSession
    if getattr(base, "_bench_threads", None) is not None:
        return

    class _Session(base):  # type: ignore[misc, valid-type]
        _bench_threads = threads

        def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
            options = sess_options if sess_options is not None else ort.SessionOptions()
            if options.intra_op_num_threads == 0:
                options.intra_op_num_threads = threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
            super().__init__(path_or_bytes, options, providers, provider_options, **kwargs)

    ort.InferenceSession = _Session
    os.environ.update(environment(threads))  # for anything imported later (torch threads: bench.peers)

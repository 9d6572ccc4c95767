"""Explanation methods, one module each, all returning :class:`onnxplain.result.Explanation`."""

# Helpers other packages use (onnxplain.export builds the same graphs the methods run); the
# modules that define them stay private to this package.
from ._masking import keep_batch_buffers
from ._tail import FEATURES, release_sessions, tail_model
from ._targets import per_sample_shape

__all__ = ["FEATURES", "keep_batch_buffers", "per_sample_shape", "release_sessions", "tail_model"]

"""Explanation methods, one module each, all returning :class:`onnxplain.result.Explanation`."""

"""Explanation methods, one module each, all returning :class:`engine.result.Explanation`."""

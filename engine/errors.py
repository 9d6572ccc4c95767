"""User-facing error types.

Every error a user can trigger is one of these (all are ``ValueError`` or ``TypeError``
subclasses), with a message that names what was wrong, where, and what was expected.
"""
from __future__ import annotations


class OnnxplainError(ValueError):
    """Base class for invalid input to onnxplain (a model, an image, a label, an option)."""


class ModelError(OnnxplainError):
    """The ONNX file cannot be used: unreadable, corrupt, or not an image classifier."""


class ImageError(OnnxplainError):
    """An image cannot be used: unreadable, wrong shape or dtype, NaN/inf pixels."""


class LabelError(OnnxplainError):
    """A class label is unknown or out of range."""


class EnvironmentUnavailableError(OnnxplainError):
    """The requested execution environment (e.g. "gpu") is not available on this machine."""


class OptionError(OnnxplainError):
    """An option (keyword argument or CLI flag) has a value outside its allowed set or range."""


class OptionTypeError(OptionError, TypeError):
    """An option has the wrong type (e.g. a float where an integer is required)."""

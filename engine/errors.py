"""User-facing error and warning types.

Every error a user can trigger is one of these (all are ``ValueError`` or ``TypeError``
subclasses), with a message that names what was wrong, where, and what was expected.
"""
from __future__ import annotations


class OnnxplainError(ValueError):
    """Base class for invalid input to onnxplain (a model, an image, a label, an option)."""


class ModelError(OnnxplainError):
    """The ONNX file cannot be used: unreadable, corrupt, not an image classifier, or it gives
    unusable outputs (NaN/inf scores, a dense map where class scores were expected)."""


class ImageError(OnnxplainError):
    """An image cannot be used: unreadable, truncated, too large, wrong shape or dtype, NaN/inf pixels."""


class LabelError(OnnxplainError):
    """A class label is unknown or out of range, or a labels source cannot be used."""


class OptionError(OnnxplainError):
    """A method or CLI option is out of range, unknown or inconsistent with another option."""


class OptionTypeError(OptionError, TypeError):
    """An option has the wrong type (also a ``TypeError``)."""


class WorkLimitError(OptionError):
    """A sample/mask/step count above the documented work bound, not explicitly allowed."""


class OutputError(OnnxplainError):
    """An output folder or file cannot be written."""


class EnvironmentUnavailableError(OnnxplainError):
    """The requested execution environment (e.g. "gpu") is not available on this machine."""


class OnnxplainWarning(UserWarning):
    """Something onnxplain did that changes the answer and the user should know about: an image
    reduced or a map capped, an image range far from what the preprocessing expects, the first
    frame of an animation used."""

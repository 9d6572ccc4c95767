"""ONNX Runtime sessions and execution environments ("auto", "cpu", "gpu")."""
from __future__ import annotations

import logging

import onnxruntime as ort

from ._validation import check_choice
from .errors import EnvironmentUnavailableError

log = logging.getLogger(__name__)
ENVIRONMENTS = ("auto", "cpu", "gpu")


def providers_for(environment: str) -> list[str]:
    """Execution providers for an environment; "gpu" without CUDA support is an error."""
    check_choice("execution_environment", environment, ENVIRONMENTS)
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if environment == "gpu" and not has_cuda:
        raise EnvironmentUnavailableError(
            "execution_environment='gpu' needs onnxruntime-gpu with CUDAExecutionProvider; this onnxruntime "
            f"offers {available}. Install onnxruntime-gpu (see README) or use 'cpu'/'auto'.")
    if environment == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def make_session(model_bytes: bytes, environment: str, *, optimize: bool = True) -> ort.InferenceSession:
    """An InferenceSession on the providers of ``environment``.

    "gpu" is checked after creation too: ORT silently falls back to CPU when no device is
    present, which we refuse rather than hide.
    """
    providers = providers_for(environment)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures still raise; ORT's own ERROR log would repeat them on stderr
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
    if environment == "gpu" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise EnvironmentUnavailableError(
            "execution_environment='gpu': onnxruntime-gpu is installed but no CUDA device could be used.")
    return session


def session_device(session: ort.InferenceSession) -> str:
    """"gpu" if the session runs on CUDA, else "cpu"."""
    return "gpu" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

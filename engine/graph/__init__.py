"""Pure ModelProto -> ModelProto rewrites: prepare (fold + verify), tap, reverse (VJP)."""
from ._util import attr, infer, np_dtype, producers, real_inputs, subgraph_inputs, topo_sort, value_info_shape
from .analysis import articulation_tensors
from .check import gradcheck
from .errors import GraphError
from .prepare import fixed_batch, prepare_model, verify_equivalent
from .reverse import RELU_MODES, SEED, build_gradient_model, gradient_name
from .tap import TensorInfo, list_tensors, tap_model

__all__ = [
    "GraphError", "RELU_MODES", "TensorInfo", "articulation_tensors", "build_gradient_model",
    "fixed_batch", "gradcheck", "gradient_name", "list_tensors", "prepare_model", "tap_model",
    "verify_equivalent", "real_inputs", "topo_sort", "SEED",
    # graph utilities for the other packages (network tails, exported explainers)
    "attr", "infer", "np_dtype", "producers", "subgraph_inputs", "value_info_shape",
]

"""The one ONNX Runtime session factory: providers, threads, precision, memory settings.

Every InferenceSession onnxplain runs is built by :func:`make_session` (the model's own
session, tapped graphs, gradient graphs, probes), so one set of runtime options holds for
all of them.

Providers (the ``provider`` option of :func:`onnxplain.load_model`, ``--provider`` on the
command line):

- ``"cpu"``: ONNX Runtime's CPU provider.
- ``"cuda"`` (alias ``"gpu"``), ``"tensorrt"``: need ``onnxruntime-gpu`` and a device.
- ``"openvino"``: OpenVINO through one of two routes. (a) The ``onnxruntime-openvino`` build
  of ONNX Runtime (it replaces the ``onnxruntime`` package, as onnxruntime-gpu does), which has
  the provider compiled in: used whenever ``OpenVINOExecutionProvider`` is among
  ``onnxruntime.get_available_providers()``, on OpenVINO's CPU device; it runs on any x86-64
  CPU OpenVINO supports (verified on this repository's AMD EPYC VM with onnxruntime-openvino
  1.24.1: the bundled model matches ORT's CPU provider to 2.5e-7). (b) Otherwise the
  ``onnxruntime-ep-openvino`` plugin (``pip install onnxplain[openvino]``) registered with
  stock onnxruntime >= 1.23 through ``register_execution_provider_library``; the plugin only
  offers devices it supports (Intel CPUs, GPUs, NPUs), and on other hardware the request is an
  error that names route (a). Precision is float32 by default (``INFERENCE_PRECISION_HINT=f32``:
  OpenVINO's CPU device would otherwise drop to bf16 on CPUs that have it and move outputs by
  up to ~3e-2); ``precision="reduced"`` lets the device choose and is recorded.
- ``"auto"``: CUDA when onnxruntime-gpu sees a device, else CPU (the default; what was
  chosen is recorded).
- any other ONNX Runtime provider name (``"...ExecutionProvider"``) is passed through.

A request that cannot be met (CUDA without a GPU, OpenVINO not installed or without a
device) is an :class:`~onnxplain.errors.EnvironmentUnavailableError`, never a silent CPU
fallback. ONNX Runtime can still place single nodes of a graph on the CPU provider when the
requested one lacks a kernel; :func:`session_report` reads that placement back from ORT's
graph-assignment record (``session.record_ep_graph_assignment_info``) and results carry it.

Threads: ``threads=N`` sets ORT's intra-op threads (and OpenVINO's ``INFERENCE_NUM_THREADS``);
None leaves ORT's default (one per physical core). Inter-op parallelism stays off (ORT's
sequential executor), as before.

Spinning: off (``session.intra_op.allow_spinning=0``; a ``config`` entry overrides it). With
ORT's default, after every kernel the intra-op workers of a session spin waiting for the next,
and onnxplain always has several sessions in a process (the model, gradient graphs, tapped
graphs) run one after the other: an idle session's spinning workers take the cores from the
one that runs. A gradient graph is hundreds of small kernels (~540 on MobileNetV3-Small at
64 px, against ~90 forward); measured on 2 shared cores with 2 threads, interleaving forward
and gradient runs as a method does: SqueezeNet 64 px gradient 10.3 ms with spinning, 6.1 ms
without (5.7 ms on one thread), forward 1.7 vs 2.0 ms; MobileNetV3-Small 9.0 vs 4.4 ms.
Graphs of large kernels (ViT-B/16) do not notice.

Memory: all sessions share one CPU memory arena, registered once per process with ONNX
Runtime's environment (``create_and_register_allocator`` + ``session.use_env_allocators``).
With an arena per session (ORT's default) each session kept its own largest batch's buffers
for its lifetime; with a model session, tapped graphs and several gradient graphs that added
up to 3.4 GB in ``onnxplain explain``. Without any arena every run page-faults its buffers
afresh (measured here: ~1.4x the CPU time of a batch); the shared arena costs nothing and
holds one peak, not one per session.

Weights: a model proto handed to a CPU session does not carry its large initializers
(>= :data:`SHARED_WEIGHT_BYTES`) through ``SerializeToString`` and ONNX Runtime's parser;
they travel as OrtValues (``SessionOptions.add_external_initializers``) that every session
with byte-identical weights of the same name shares (compared in full, never by hash). The
gradient engine builds several sessions of one network (the model, preparation's checks, the
gradient graphs, tapped graphs): on ViT-B/16 (330 MB of weights) each session cost ~1.5 s of
serialising and parsing before, and held its own copy of the weights.
"""
from __future__ import annotations

import collections
import ctypes
import json
import logging
import math
import sys
import weakref
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort
from onnx import helper

from .errors import EnvironmentUnavailableError, OptionError, OptionTypeError

log = logging.getLogger(__name__)

#: short provider names -> ONNX Runtime provider names
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
             "openvino": "OpenVINOExecutionProvider"}
#: older spellings (the ``execution_environment`` / ``--device`` words) -> provider names
ALIASES = {"gpu": "cuda"}
#: legacy execution-environment words, still accepted everywhere a provider is
ENVIRONMENTS = ("auto", "cpu", "gpu")
PRECISIONS = ("f32", "reduced")
_GPU = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
           "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def check_provider(provider: Any) -> str:
    """The provider as onnxplain names it: "auto", a key of :data:`PROVIDERS`, or a full ORT name."""
    if not isinstance(provider, str):
        raise OptionTypeError(f"The 'provider' parameter must be a string; got {type(provider).__name__}.")
    name = ALIASES.get(provider.lower(), provider.lower())
    if name == "auto" or name in PROVIDERS:
        return name
    if provider.endswith("ExecutionProvider"):
        short = {v: k for k, v in PROVIDERS.items()}.get(provider)
        return short or provider
    raise OptionError(f"The 'provider' parameter must be 'auto', one of {', '.join(PROVIDERS)} ('gpu' = 'cuda'), or "
                      f"an ONNX Runtime provider name ending in 'ExecutionProvider'; got {provider!r}.")


def check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise OptionTypeError(f"The 'threads' parameter must be a positive integer or None; got {threads!r}.")
    if threads < 1:
        raise OptionError(f"The 'threads' parameter must be >= 1; got {threads}.")
    return threads


def check_precision(precision: Any) -> str:
    if precision not in PRECISIONS:
        raise OptionError(f"The 'precision' parameter must be one of {PRECISIONS}; got {precision!r}.")
    return precision


def ort_provider(provider: str) -> str:
    """The ONNX Runtime provider name a request resolves to ("auto": CUDA if usable, else CPU)."""
    name = check_provider(provider)
    if name == "auto":
        return "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else \
            "CPUExecutionProvider"
    return PROVIDERS.get(name, name)


def _openvino_devices() -> list[Any]:
    """The OpenVINO plugin's devices, registering the plugin library once."""
    try:
        import onnxruntime_ep_openvino as ov
    except ImportError:
        raise EnvironmentUnavailableError(
            "provider 'openvino' needs the OpenVINO plugin for onnxruntime: pip install 'onnxplain[openvino]' "
            "(the onnxruntime-ep-openvino package, onnxruntime >= 1.23).") from None
    name = ov.get_ep_name()
    if not any(d.ep_name == name for d in ort.get_ep_devices()):
        try:
            ort.register_execution_provider_library(name, ov.get_library_path())
        except Exception as exc:  # already registered under this name, or an ABI mismatch
            if "already registered" not in str(exc).lower():
                raise EnvironmentUnavailableError(f"the OpenVINO plugin cannot be registered with onnxruntime "
                                                  f"{ort.__version__}: {exc}") from None
    devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
    if not devices:
        seen = ", ".join(sorted({f"{d.ep_name} on {d.device.type.name} ({d.device.vendor})" for d in ort.get_ep_devices()}))
        raise EnvironmentUnavailableError(
            "provider 'openvino': the OpenVINO plugin is installed but offers no device on this machine (it "
            f"supports Intel CPUs, GPUs and NPUs); onnxruntime sees only: {seen}. The onnxruntime-openvino build "
            "(pip uninstall -y onnxruntime && pip install onnxruntime-openvino) runs OpenVINO's CPU device on other "
            "x86-64 CPUs too (README).")
    return devices


def _openvino_options(devices: list[Any], threads: int | None, precision: str) -> tuple[list[Any], dict[str, str]]:
    """The plugin route: the first CPU device (else the first device) and its provider options."""
    cpu = [d for d in devices if d.device.type == ort.OrtHardwareDeviceType.CPU]
    chosen = cpu[:1] or devices[:1]
    return chosen, _openvino_config(chosen[0].device.type.name, threads, precision)  # CPU / GPU / NPU


def _openvino_config(kind: str, threads: int | None, precision: str) -> dict[str, str]:
    """OpenVINO provider options for device ``kind``: f32 pinned unless ``precision="reduced"``,
    ``INFERENCE_NUM_THREADS`` from ``threads`` on the CPU device."""
    config: dict[str, str] = {}
    if precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if threads is not None and kind == "CPU":
        config["INFERENCE_NUM_THREADS"] = str(threads)
    options = {"device_type": kind}
    if config:
        options["load_config"] = json.dumps({kind: config})
    return options


_SHARED_ARENA: list[bool] = []


def _shared_arena() -> bool:
    """Register the process-wide CPU arena once; False when this onnxruntime cannot."""
    if not _SHARED_ARENA:
        try:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            # kSameAsRequested: grow by what a run needs, not by doubling chunks
            ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
            _SHARED_ARENA.append(True)
        except Exception as exc:  # an older onnxruntime: per-session arenas, as ORT's default
            log.info("no shared CPU arena (%s); sessions keep their own", exc)
            _SHARED_ARENA.append(False)
    return _SHARED_ARENA[0]


def shared_arena_in_use() -> bool:
    """True when sessions share the process-wide CPU arena (registered by the first session)."""
    return bool(_SHARED_ARENA) and _SHARED_ARENA[0]


#: initializers at least this large reach CPU sessions as shared OrtValues (module notes)
SHARED_WEIGHT_BYTES = 1 << 16
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL
_WEIGHTS: dict[tuple, list[weakref.ref]] = {}


class _Weight:
    """One initializer's bytes and the OrtValue over them (no copy), shared across sessions."""

    __slots__ = ("raw", "value", "__weakref__")

    def __init__(self, raw: bytes, dtype: Any, dims: tuple[int, ...]):
        self.raw = raw
        self.value = ort.OrtValue.ortvalue_from_numpy(np.frombuffer(raw, dtype).reshape(dims))


def _numpy_dtype(data_type: int) -> Any:
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
    except Exception:  # bfloat16, float8, strings: stay inline
        return None
    return dtype if dtype.kind in "fiub" and dtype.itemsize in (1, 2, 4, 8) and not dtype.metadata else None


def _shared_weight(t: Any, dtype: Any) -> _Weight:
    """The cached _Weight with ``t``'s name and bytes, or a new one."""
    key = (t.name, t.data_type, tuple(t.dims))
    raw = t.raw_data
    refs = [r for r in _WEIGHTS.get(key, ()) if r() is not None]
    for r in refs:
        w = r()
        if w is not None and w.raw == raw:
            _WEIGHTS[key] = refs
            return w
    w = _Weight(raw, dtype, tuple(t.dims))
    _WEIGHTS[key] = refs + [weakref.ref(w, lambda _, key=key: _prune(key))]
    return w


def _prune(key: tuple) -> None:
    refs = [r for r in _WEIGHTS.get(key, ()) if r() is not None]
    if refs:
        _WEIGHTS[key] = refs
    else:
        _WEIGHTS.pop(key, None)


def copy_fields(dst: Any, src: Any, skip: str | frozenset[str] | set[str]) -> None:
    """Copy the set fields of protobuf message ``src`` into ``dst``, except the fields named in
    ``skip`` (no deep copy of what is skipped: a model without its 330 MB of weights costs nothing)."""
    skip = {skip} if isinstance(skip, str) else skip
    for fd, value in src.ListFields():
        if fd.name in skip:
            continue
        if fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def _split_weights(model: Any) -> tuple[bytes, list[str], list[_Weight]] | None:
    """(the model without its large main-graph initializers, their names, their shared weights).

    None when nothing is large enough. The initializers stay in the graph as external-data
    references that :meth:`SessionOptions.add_external_initializers` fills in.
    """
    g = model.graph
    big = {}
    for k, t in enumerate(g.initializer):
        if t.data_location == _EXTERNAL or not t.HasField("raw_data"):
            continue
        dtype = _numpy_dtype(t.data_type)
        if dtype is not None and math.prod(t.dims) * dtype.itemsize >= SHARED_WEIGHT_BYTES:
            big[k] = dtype
    if not big:
        return None
    light = type(model)()
    copy_fields(light, model, "graph")
    copy_fields(light.graph, g, "initializer")
    names, weights = [], []
    for k, t in enumerate(g.initializer):
        if k not in big:
            light.graph.initializer.append(t)
            continue
        w = _shared_weight(t, big[k])
        ref = light.graph.initializer.add()
        ref.name, ref.data_type, ref.data_location = t.name, t.data_type, _EXTERNAL
        ref.dims.extend(t.dims)
        for key, value in (("location", "onnxplain-shared-weight"), ("offset", "0"), ("length", str(len(w.raw)))):
            entry = ref.external_data.add()
            entry.key, entry.value = key, value
        names.append(t.name)
        weights.append(w)
    return light.SerializeToString(), names, weights


def make_session(model: Any, provider: str = "cpu", *, threads: int | None = None, precision: str = "f32",
                 optimization: str = "all", optimized_model_path: str | None = None,
                 config: Mapping[str, str] | None = None, log_severity: int = 4) -> ort.InferenceSession:
    """An InferenceSession for ``model`` (bytes, a path or an onnx.ModelProto) on ``provider``.

    ``optimization`` is ORT's graph optimisation level ("all", "basic" or "none");
    ``optimized_model_path`` saves the optimised graph there (graph preparation uses ORT's
    basic level as a constant folder); ``config`` adds session config entries.
    ``log_severity`` is ORT's session log level: 4 (fatal only) by default, since failures
    still raise and ORT's own ERROR line would repeat them on stderr; the gradient graph's
    build-time guard asks for 1 (warnings) to read ORT's buffer-reuse shape warnings.

    Raises EnvironmentUnavailableError when the provider is not available or, once the
    session exists, not the one running it.
    """
    name = ort_provider(provider)
    weights: list[_Weight] = []
    if hasattr(model, "SerializeToString"):
        split = _split_weights(model) if name == "CPUExecutionProvider" else None
        if split is None:
            model = model.SerializeToString()
        else:
            model, names, weights = split
    threads = check_threads(threads)
    precision = check_precision(precision)
    options = ort.SessionOptions()
    options.log_severity_level = log_severity
    if _shared_arena():  # see the module notes on memory
        options.add_session_config_entry("session.use_env_allocators", "1")
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimization not in _LEVELS:
        raise OptionError(f"The 'optimization' parameter must be one of {tuple(_LEVELS)}; got {optimization!r}.")
    options.graph_optimization_level = _LEVELS[optimization]
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    config = {"session.intra_op.allow_spinning": "0", **(config or {})}  # see the module notes
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    if weights:
        options.add_external_initializers(names, [w.value for w in weights])
    if name == "OpenVINOExecutionProvider" and name in ort.get_available_providers():  # onnxruntime-openvino
        session = ort.InferenceSession(model, sess_options=options,
                                       providers=[(name, _openvino_config("CPU", threads, precision)),
                                                  "CPUExecutionProvider"])
    elif name == "OpenVINOExecutionProvider":
        devices, ov_options = _openvino_options(_openvino_devices(), threads, precision)
        options.add_provider_for_devices(devices, ov_options)
        session = ort.InferenceSession(model, sess_options=options)
    else:
        available = ort.get_available_providers()
        if name not in available:
            package = "onnxruntime-gpu with " if name in _GPU else ""
            raise EnvironmentUnavailableError(f"provider {provider!r} needs {package}ONNX Runtime's {name}; this "
                                              f"onnxruntime {ort.__version__} offers {available}"
                                              + (" (install onnxruntime-gpu, see README)." if package else "."))
        providers = [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]
        session = ort.InferenceSession(model, sess_options=options, providers=providers)
    if session.get_providers()[0] != name:
        raise EnvironmentUnavailableError(f"provider {provider!r}: onnxruntime created the session on "
                                          f"{session.get_providers()} instead of {name} (no usable device).")
    session._onnxplain_weights = weights  # the shared weights live as long as a session using them
    return session


def session_report(session: ort.InferenceSession) -> dict[str, Any]:
    """Which provider ran which part of a session's graph, as ORT recorded it.

    Returns ``{"providers": [...], "nodes": {provider: node count}}`` (nodes after ORT's graph
    optimisation; empty when the record is unavailable).
    """
    nodes: collections.Counter[str] = collections.Counter()
    try:
        for sub in session.get_provider_graph_assignment_info():
            nodes[sub.ep_name] += len(sub.get_nodes())
    except Exception as exc:  # an onnxruntime without the record (< 1.23)
        log.debug("no graph-assignment record: %s", exc)
    return {"providers": list(session.get_providers()), "nodes": dict(nodes)}


def session_device(session: ort.InferenceSession) -> str:
    """"gpu" if the session runs on CUDA/TensorRT, else "cpu" (the older, coarser description)."""
    return "gpu" if session.get_providers()[0] in _GPU else "cpu"


_LIBC: list[Any] = []


def arena_shrinkage_run_options() -> ort.RunOptions:
    """Run options that return the shared CPU arena's unused chunks to the system after the run."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def return_free_memory() -> bool:
    """Give the C heap's free pages back to the operating system (glibc ``malloc_trim``).

    ONNX Runtime builds each session's graph, kernels and weight copies with ``malloc``; when a
    session goes, glibc keeps most of those pages mapped for reuse, so the process's resident
    memory does not fall. ``onnxplain explain`` calls this between methods (it takes a few
    milliseconds). The shared CPU arena is not affected (it keeps its chunks for the next run).
    Returns False where there is no glibc (macOS, Windows, musl): nothing is done there.
    """
    if not _LIBC:
        try:
            libc = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
            _LIBC.append(getattr(libc, "malloc_trim", None))
        except OSError:
            _LIBC.append(None)
    if _LIBC[0] is None:
        return False
    _LIBC[0](0)
    return True


def process_memory() -> dict[str, float | None]:
    """This process's resident memory now and at its peak, in MiB (``/proc/self/status`` VmRSS and
    VmHWM on Linux; elsewhere the peak from ``getrusage`` and no current value)."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
        return {"rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
                "peak_rss_mib": round(int(fields["VmHWM"].split()[0]) / 1024, 1)}
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
        return {"rss_mib": None, "peak_rss_mib": round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)}

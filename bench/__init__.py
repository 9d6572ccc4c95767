"""onnxplain's benchmarks: every method against raw ONNX Runtime inference and against its peers.

``python -m bench`` (from a source checkout; not shipped in the wheel) runs it (:mod:`bench.cli`); the
cases live in one table (:mod:`bench.cases`), each measured in fresh worker processes
(:mod:`bench.worker`). ``bench/README.md`` describes the measurements and the targets.
Uses onnxplain's public API only (``onnxplain.*``).
"""

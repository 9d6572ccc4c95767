"""The ``zoo`` marker: the whole real-zoo matrix (tests/graph/test_real_zoo.py) runs only when asked.

    python -m pytest -m zoo tests/graph/test_real_zoo.py    # ~40 min on 2 cores, cold cache

Without ``-m`` naming ``zoo``, zoo-marked tests are deselected (not skipped one by one), so
the default suite runs only the fast subset.
"""
from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "zoo: the whole real-zoo matrix; run with `python -m pytest -m zoo`")


def pytest_collection_modifyitems(config, items):
    if "zoo" in (config.getoption("markexpr", "") or ""):
        return
    kept = [item for item in items if item.get_closest_marker("zoo") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("zoo") is not None])
        items[:] = kept

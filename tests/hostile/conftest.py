"""Hypothesis profiles for the fuzz tests.

- "default": a few dozen examples per test (the whole fuzz file stays within ~30-60 s on 2 cores);
- "long": 25x more examples, for a soak run::

    ONNXPLAIN_HYPOTHESIS_PROFILE=long python3 -m pytest tests/hostile/test_fuzz.py
    python3 -m pytest tests/hostile/test_fuzz.py --hypothesis-profile=long
"""
from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=timedelta(seconds=20), derandomize=False, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                      HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("default", max_examples=25, **_COMMON)
settings.register_profile("long", max_examples=600, **_COMMON)
settings.load_profile(os.environ.get("ONNXPLAIN_HYPOTHESIS_PROFILE", "default"))

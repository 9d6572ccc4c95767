"""Pure parts of the bench: the case table, the scaling plan, file names (no model runs)."""
from __future__ import annotations

import pytest

from bench import cases, report, scaling


@pytest.mark.parametrize("name, short", [
    ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "intel-xeon-platinum-8375c"),
    ("AMD EPYC", "amd-epyc"),
    ("AMD Ryzen 9 7950X 16-Core Processor", "amd-ryzen-9-7950x"),
    ("CPU @ 3.0GHz", "unknown"),
])
def test_cpu_short_names(name, short):
    assert report.cpu_short(name) == short


def test_scaling_plan_caps_lime_samples():
    lime = [x for study, case, x, _ in scaling.plan(False, 16384) if case == "lime"]
    assert lime == [1024, 4096, 16384]
    points = scaling.plan(False, 65536)
    assert [x for _, c, x, _ in points if c == "lime"][-1] == 65536
    assert {c for _, c, _, _ in points} == {"lime", "occlusion", "smoothgrad"}


def test_case_table_selection():
    import onnxplain

    assert [c.name for c in cases.select(None)] == cases.DEFAULT_METHODS
    assert "score-cam" not in cases.DEFAULT_METHODS and len(cases.select(["all"])) == len(cases.CASES)
    with pytest.raises(ValueError, match="'methods' parameter"):
        cases.select(["lime", "shap"])
    # one case per registry method, in the registry's names
    assert sorted(cases.BY_NAME) == sorted(onnxplain.METHODS)
    # every case's smoke sizes are options of the same method (a subset of the full run's, or the window)
    for case in cases.CASES:
        assert set(case.smoke) <= set(case.params) | {"mask_size"}, case.name

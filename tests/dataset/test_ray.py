"""The Ray backend on a real local Ray (one module-scoped ``ray.init(num_cpus=2)``).

Oracle: the embedded run on the same files (conftest ``embedded_run``): the same rows,
bit-identical maps, the same labels, scores, metrics and error rows.
"""
from __future__ import annotations

import json

import numpy as np
import onnxplain
import pytest
from onnxplain.results import read_results

from .conftest import METRIC_OPTIONS, OCCLUSION

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_run_equals_the_embedded_run_and_resumes(local_ray, embedded_run, bundled, photo_tree, tmp_path):
    out = tmp_path / "ray.parquet"
    kwargs = {"options": {"occlusion": OCCLUSION}, "metrics": ["deletion"], "metric_options": METRIC_OPTIONS,
                  "batch_size": 2, "progress": False, "ray": True, "ray_actors": 1}
    run = onnxplain.explain_dataset(bundled, photo_tree, ["gradcam", "occlusion"], ["top", "true"], out=out, **kwargs)
    assert run.backend == "ray" and run.rows_written == 20 and run.errors == 4
    key = ["image", "method", "target"]
    a = read_results(out).to_pandas(maps=True).sort_values(key).reset_index(drop=True)
    b = read_results(embedded_run.out).to_pandas(maps=True).sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    for x, y in zip(a.itertuples(), b.itertuples()):
        assert (x.error is None or x.error != x.error) == (y.error is None or y.error != y.error)
        if y.map is None:
            assert x.map is None
            continue
        np.testing.assert_array_equal(x.map, y.map)
        assert (x.label, x.score, x.deletion) == (y.label, y.score, y.deletion)
        # every option alike; "runtime" records the session settings (a Ray actor pins its
        # threads to its CPUs, the embedded run leaves ORT's default) and graphs run so far
        px, py = json.loads(x.params), json.loads(y.params)
        assert {k: v for k, v in px.items() if k != "runtime"} == {k: v for k, v in py.items() if k != "runtime"}
        assert px["runtime"]["provider"] == py["runtime"]["provider"]
        assert list(x.predicted_index) == list(y.predicted_index)
    again = onnxplain.explain_dataset(bundled, photo_tree, ["gradcam", "occlusion"], ["top", "true"], out=out,
                                      **kwargs)
    assert again.rows_written == 0 and again.rows_skipped == 20
    assert len(read_results(out)) == 20

"""The report's sources read into one record model: Parquet results of a dataset run (schema
version 1 of ``onnxplain.results``, written here with pyarrow from real explanations) and an
``onnxplain explain`` folder.

Oracles: the explanations written are read back bit for bit (maps, labels, scores), and the
report's pages carry exactly the rows written.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import onnxplain
from onnxplain.report import ReportError, from_parquet, read_results, write_report

from ..tiny_models import make_classifier, save

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture()
def parquet_run(tmp_path):
    from PIL import Image

    model = onnxplain.load_model(save(make_classifier(head="softmax"), tmp_path, "tiny"), preprocessing="none",
                                 labels=["ant", "bee", "cow", "dog"])
    rng = np.random.default_rng(0)
    rows, exps = [], {}
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(path)
        top = model.classify(str(path), top_k=2)
        for method, fn in (("occlusion", onnxplain.occlusion_sensitivity), ("gradient-x-input", None)):
            exp = fn(model, str(path), stride=2) if fn else onnxplain.gradient_attribution(
                model, str(path), method="gradient-x-input")
            exps[(str(path), method)] = exp
            m = exp.score_map.astype("<f4")
            rows.append({"schema_version": 1, "image": str(path), "image_index": i, "method": method, "target": "top",
                         "label": exp.labels[0], "label_name": exp.label_names[0], "score": float(exp.scores[0]),
                         "predicted_index": [t[0] for t in top], "predicted_name": [t[1] for t in top],
                         "predicted_score": [t[2] for t in top], "true_label": 1 if i else 3,
                         "true_label_name": "bee" if i else "dog", "map": m.tobytes(), "map_dtype": "float32",
                         "map_shape": list(m.shape), "map_scale": 1.0, "params": json.dumps({"stride": 2}),
                         "seconds": 0.5, "timings": json.dumps(exp.timings), "deletion": 0.25 * (i + 1),
                         "insertion": None, "pointing_game": None, "energy": None, "error": None,
                         "model": model.path})
    rows.append({**rows[-1], "method": "rise", "map": None, "map_shape": None, "error": "could not run"})
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")  # a dataset's corrupt file: a row with an error, no map
    rows.append({**rows[0], "image": str(broken), "image_index": 3, "map": None, "map_shape": None,
                 "predicted_index": None, "predicted_name": None, "predicted_score": None, "true_label": None,
                 "true_label_name": None, "deletion": None, "error": "image cannot be read"})
    path = tmp_path / "results.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, exps, model


def test_parquet_rows_become_records(parquet_run):
    path, exps, model = parquet_run
    run = from_parquet(path)
    assert [im.name for im in run.images] == ["img0.png", "img1.png", "img2.png", "broken.jpg"]
    assert run.images[3].maps[0].status == "error: image cannot be read" and run.images[3].confidence is None
    run.images = run.images[:3]
    assert run.methods == ["occlusion", "gradient-x-input", "rise"] and run.model["path"] == model.path
    first = run.images[0]
    assert (first.true_label, first.true_name, first.correct) == (3, "dog", first.predicted == 3)
    assert first.confidence == pytest.approx(model.classify(first.image, top_k=1)[0][2])
    for im in run.images:
        for m in im.maps:
            if m.method == "rise":
                assert m.status == "error: could not run" and m.load_map() is None
                continue
            np.testing.assert_array_equal(m.load_map(), exps[(im.image, m.method)].score_map)
            assert m.metrics["deletion"] in (0.25, 0.5, 0.75) and "insertion" not in m.metrics
    assert run.timings["compute_seconds"] == pytest.approx(0.5 * 8)


def test_parquet_report_page(parquet_run, tmp_path):
    path, _, _ = parquet_run
    index = write_report(read_results(path), tmp_path / "site")
    html = open(index, encoding="utf-8").read()
    data = json.loads(html.split('id="report-data">')[1].split("</script>")[0].replace("<\\/", "</"))
    assert [im["name"] for im in data["images"]] == ["img0.png", "img1.png", "img2.png", "broken.jpg"]
    assert "cannot be read" in data["images"][3]["problem"] and data["images"][3]["photo"] is None
    assert data["metric_names"] == ["deletion"]
    assert data["images"][2]["maps"]["rise"]["status"] == "error: could not run"
    assert data["images"][0]["maps"]["occlusion"]["scale"]["quantity"] == "score drop when occluded"


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(ReportError, match="do not exist"):
        read_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="neither summary.json"):
        read_results(tmp_path / "empty")
    pq.write_table(pa.Table.from_pylist([{"x": 1}]), tmp_path / "other.parquet")
    with pytest.raises(ReportError, match=r"lacks the column\(s\) \['image', 'method'\]"):
        read_results(tmp_path / "other.parquet")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ReportError, match="not an `onnxplain explain` summary"):
        read_results(tmp_path / "bad.json")

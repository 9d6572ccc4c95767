"""explain_dataset / read_results / onnxplain run on real files.

Oracles: the single-image method functions on the same working image (the batched engine
calls must give bit-identical maps, scores and params); Model.classify for predictions;
onnxplain.evaluate on the stored map for the metrics; hand-known facts (folder names,
listing columns, which file is corrupt); pandas and DuckDB reading the file directly.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import onnxplain
import pandas as pd
import pytest
from onnxplain.cli import main
from onnxplain.dataset import _Progress, list_images
from onnxplain.errors import ImageError, LabelError, OnnxplainError
from onnxplain.methods.gradcam import _GRADCAM, _GRADCAMPP, grad_cam, grad_cam_plus_plus
from onnxplain.methods.gradients import (
    gradient_attribution,
    gradient_attribution_batch,
    gradient_attribution_samples_batch,
)
from onnxplain.results import (
    SCHEMA_VERSION,
    ResultsError,
    decode_map,
    encode_map,
    read_results,
)
from PIL import Image
from skimage import data

from .conftest import METRIC_OPTIONS, OCCLUSION, working

REPO = pathlib.Path(__file__).resolve().parents[2]
RECT = REPO / "tests" / "data" / "rectangle"


# ---- batched entry points = single-image calls ---------------------------------------------
@pytest.fixture(scope="module")
def three(bundled):
    return np.stack([bundled.prepare(im)[0] for im in (data.chelsea(), data.coffee(), data.astronaut())])


def _same(single, batched):
    assert single.labels == batched.labels and single.label_names == batched.label_names
    np.testing.assert_array_equal(single.score_map, batched.score_map)
    np.testing.assert_array_equal(single.scores, batched.scores)
    # every option alike; "runtime" is the model's record of the graphs it has run so far (which
    # grows as calls build new graphs), not an option of the call
    assert {k: v for k, v in single.params.items() if k != "runtime"} == \
        {k: v for k, v in batched.params.items() if k != "runtime"}
    assert single.params["runtime"]["provider"] == batched.params["runtime"]["provider"]


@pytest.mark.parametrize("cam, func", [(_GRADCAM, grad_cam), (_GRADCAMPP, grad_cam_plus_plus)])
def test_cam_batch_is_bit_identical_to_single_calls(bundled, three, cam, func):
    """Oracle: grad_cam / grad_cam_plus_plus image by image (top class in the graph, and
    given labels including a list, which gives a K axis)."""
    top, out = cam.explain_batch(bundled, three)
    labels = [281, [968, 504], "tabby"]
    given, _ = cam.explain_batch(bundled, three, labels, mini_batch_size=3)  # rows of two images share a run
    for b in range(3):
        _same(func(bundled, three[b]), top[b])
        _same(func(bundled, three[b], labels[b], mini_batch_size=3), given[b])
    assert given[1].score_map.shape == (224, 224, 2)
    # the raw output rows give the same top class as the graph chose
    assert [int(np.argmax(o)) for o in out] == [e.labels[0] for e in top]


@pytest.mark.parametrize("method", ["gradient", "guided-backprop", "gradient-x-input"])
def test_gradient_batch_is_bit_identical_to_single_calls(bundled, three, method):
    """Oracle: gradient_attribution image by image."""
    top, _ = gradient_attribution_batch(bundled, three, method=method)
    labels = [[1, 2], 968, 3]
    given, _ = gradient_attribution_batch(bundled, three, labels, method=method, mini_batch_size=2)
    for b in range(3):
        _same(gradient_attribution(bundled, three[b], method=method), top[b])
        single = gradient_attribution(bundled, three[b], labels[b], method=method, mini_batch_size=2)
        _same(single, given[b])
        np.testing.assert_array_equal(single.gradients, given[b].gradients)


def _close(single, pooled, rtol=1e-4):
    """Same labels/params, maps equal up to float32 rounding of another ORT batch composition."""
    assert single.labels == pooled.labels and single.label_names == pooled.label_names
    scale = float(np.abs(single.score_map).max())
    np.testing.assert_allclose(pooled.score_map, single.score_map, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(pooled.gradients, single.gradients, rtol=rtol,
                               atol=rtol * float(np.abs(single.gradients).max()))
    np.testing.assert_allclose(pooled.scores, single.scores, rtol=1e-5)
    assert {k: v for k, v in single.params.items() if k != "runtime"} == \
        {k: v for k, v in pooled.params.items() if k != "runtime"}


@pytest.mark.parametrize("method, opts", [("integrated-gradients", {"num_steps": 5}),
                                          ("smoothgrad", {"num_samples": 3, "random_state": 7})])
def test_pooled_samples_equal_single_calls(bundled, three, method, opts):
    """Integrated gradients / SmoothGrad with several images' samples in one engine run (4 rows
    per run, 5 or 3 samples per image: runs straddle images). Oracle: gradient_attribution on
    each image (itself checked against captum elsewhere), within float32 tolerance."""
    labels = [281, [968, 504], "tabby"]
    pooled, out = gradient_attribution_samples_batch(bundled, three, labels, method=method, mini_batch_size=4, **opts)
    for b in range(3):
        _close(gradient_attribution(bundled, three[b], labels[b], method=method, mini_batch_size=4, **opts), pooled[b])
    assert pooled[1].score_map.shape == (224, 224, 2)
    # the raw output rows are each image's own forward output
    np.testing.assert_allclose(out, bundled.run_native(bundled.to_native(three)), rtol=1e-4, atol=1e-6)


def test_dataset_integrated_gradients_pools_images_and_equals_single_calls(bundled, photo_tree, tmp_path):
    """A dataset run of integrated gradients (pooled across the batch's images) stores, per
    image, the map of gradient_attribution on its working image for its top class."""
    opts = {"num_steps": 3, "mini_batch_size": 2}
    out = tmp_path / "ig.parquet"
    onnxplain.explain_dataset(bundled, photo_tree, ["integrated-gradients"], out=out,
                              options={"integrated-gradients": opts}, batch_size=4, progress=False)
    df = read_results(out).to_pandas(maps=True)
    ok = df[df.error.isna()]
    assert len(ok) == 4
    for row in ok.itertuples():
        px = working(bundled, row.image)
        single = gradient_attribution(bundled, px, int(row.label), method="integrated-gradients", **opts)
        scale = float(np.abs(single.score_map).max())
        np.testing.assert_allclose(row.map, single.score_map, rtol=1e-4, atol=1e-4 * scale)


# ---- one embedded run on the ImageFolder tree -----------------------------------------------
def test_folder_run_rows_errors_and_labels(embedded_run, photo_tree, bundled):
    res = read_results(embedded_run.out)
    df = res.to_pandas()
    assert len(df) == 5 * 2 * 2 == embedded_run.rows_written
    assert not df.duplicated(["image", "method", "target"]).any()
    broken = df[df.image.str.endswith("broken.jpg")]
    assert len(broken) == 4 and broken.error.str.contains("broken.jpg").all()
    assert broken["map"].isna().all()
    ok = df[~df.image.str.endswith("broken.jpg")]
    assert ok.error.isna().all() and embedded_run.errors == 4
    # true labels from the folder names (hand-known), also on the error rows
    expect = {"tabby": 281, "cup": 968}
    for row in df.itertuples():
        assert row.true_label == expect[pathlib.Path(row.image).parent.name]
    assert set(ok[ok.target == "true"].label) == {281, 968}
    assert (ok[ok.target == "true"].label == ok[ok.target == "true"].true_label).all()
    assert set(ok.map_shape.map(tuple)) == {(224, 224)}
    sizes = {pathlib.Path(r.image).name: (r.image_height, r.image_width) for r in df.itertuples()}
    assert sizes["chelsea.jpg"] == data.chelsea().shape[:2] and sizes["chelsea_crop.jpg"] == (220, 340)


def test_folder_run_maps_equal_single_image_calls(embedded_run, photo_tree, bundled):
    """Oracle: grad_cam and occlusion_sensitivity on each working image; Model.classify for
    the predictions; onnxplain.evaluate for the deletion AUC."""
    res = read_results(embedded_run.out)
    checked = 0
    for e in res.explanations():
        path = e.image
        px = working(bundled, path)
        label = e.labels[0]
        if e.method == "gradcam":
            single = grad_cam(bundled, px, None if e.target == "top" else label)
        else:
            single = onnxplain.occlusion_sensitivity(bundled, px, [label], **OCCLUSION)
            single.score_map = single.score_map[..., 0]
        np.testing.assert_array_equal(e.score_map, single.score_map)
        assert single.labels == [label]
        np.testing.assert_allclose(e.scores, single.scores, rtol=1e-6)
        top = bundled.classify(path, top_k=5)
        assert [i for i, _, _ in top] == [i for i, _, _ in e.predicted]
        np.testing.assert_allclose([s for *_, s in e.predicted], [s for *_, s in top], rtol=1e-4)
        if path.endswith("chelsea.jpg"):  # the metric plumbing, on one image (4 rows)
            ev = onnxplain.evaluate(bundled, px, label, e.score_map, metrics=["deletion"],
                                    step=METRIC_OPTIONS["step"])
            assert e.metrics["deletion"] == pytest.approx(ev.scores["deletion"], rel=1e-9, abs=1e-12)
        checked += 1
    assert checked == 16


def test_results_read_directly_by_pandas_and_duckdb(embedded_run):
    """The file is plain Parquet: pandas and DuckDB read it with no onnxplain code."""
    import pyarrow.parquet as pq

    df = pd.read_parquet(embedded_run.out)
    assert (df.schema_version == SCHEMA_VERSION).all() and len(df) == 20
    meta = pq.read_schema(embedded_run.out).metadata
    assert meta[b"onnxplain.schema_version"] == str(SCHEMA_VERSION).encode()
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"SELECT method, count(*) AS n, count(error) AS errors FROM read_parquet('{embedded_run.out}') "
                      "GROUP BY method ORDER BY method").fetchall()
    assert rows == [("gradcam", 10, 2), ("occlusion", 10, 2)]
    # a map decoded from DuckDB's bytes equals read_results' map
    blob, shape = duckdb.sql(f"SELECT map, map_shape FROM read_parquet('{embedded_run.out}') WHERE error IS NULL "
                             "ORDER BY image, method, target LIMIT 1").fetchall()[0]
    first = read_results(embedded_run.out).to_pandas(maps=True).dropna(subset=["label"])
    first = first.sort_values(["image", "method", "target"]).iloc[0]
    np.testing.assert_array_equal(decode_map(blob, "float32", shape), first["map"])


def test_map_column_is_stored_uncompressed_and_the_rest_zstd(embedded_run):
    """Float maps are near-random bytes to zstd (results module notes): the merged file stores
    the map column uncompressed, every other column zstd. Oracle: the file's own Parquet
    metadata as pyarrow reads it; the maps still equal the single-image calls (test above)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(embedded_run.out).metadata
    codecs = {meta.row_group(g).column(c).path_in_schema: meta.row_group(g).column(c).compression
              for g in range(meta.num_row_groups) for c in range(meta.num_columns)}
    assert codecs["map"] == "UNCOMPRESSED"
    assert {v for k, v in codecs.items() if k != "map"} == {"ZSTD"}


def test_resume_skips_done_rows_adds_new_ones_and_refuses_other_options(embedded_run, photo_tree, bundled,
                                                                        tmp_path):
    out = tmp_path / "r.parquet"
    shutil.copy(embedded_run.out, out)
    again = onnxplain.explain_dataset(bundled, photo_tree, ["gradcam", "occlusion"], ["top", "true"], out=out,
                                      options={"occlusion": OCCLUSION}, metrics=["deletion"],
                                      metric_options=METRIC_OPTIONS, progress=False)
    assert again.rows_written == 0 and again.rows_skipped == 20
    assert pd.read_parquet(out).equals(pd.read_parquet(embedded_run.out))
    more = onnxplain.explain_dataset(bundled, photo_tree, ["gradcam", "occlusion", "gradcam++"], ["top", "true"],
                                     out=out, options={"occlusion": OCCLUSION}, metrics=["deletion"],
                                     metric_options=METRIC_OPTIONS, progress=False)
    assert more.rows_written == 10
    df = pd.read_parquet(out)
    assert len(df) == 30 and not df.duplicated(["image", "method", "target"]).any()
    with pytest.raises(ResultsError, match="other options"):
        onnxplain.explain_dataset(bundled, photo_tree, ["occlusion"], out=out,
                                  options={"occlusion": {"mask_size": 40, "stride": 56}}, progress=False)


def test_killed_run_loses_at_most_the_batch_in_flight_and_resumes(tmp_path):
    """SIGKILL a real `onnxplain run` after its first part is on disk; the parts left are
    readable, and the same command finishes the job with one row per key. (The rectangle
    model with 2-pixel-stride occlusion: ~1000 tiny model runs per image.)"""
    samples = np.load(RECT / "samples.npz")
    src = tmp_path / "many"
    src.mkdir()
    for i in range(10):
        Image.fromarray(samples["images"][i]).save(src / f"s{i}.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("no_rectangle\nrectangle\n")
    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, "-m", "onnxplain", "run", "--model", str(RECT / "rectangle_cnn.onnx"), "--preprocessing",
           "none", "--labels", str(labels), "--images", str(src), "--methods", "occlusion", "--out", str(out),
           "--batch-size", "2", "--set", "occlusion.mask_size=4", "--set", "occlusion.stride=2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = out.with_name(out.name + ".parts")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(parts.glob("*.parquet")):
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    partial = read_results(out).to_pandas()
    assert 2 <= len(partial) < 10 and not partial.duplicated(["image", "method", "target"]).any()
    assert main(cmd[3:]) == 0
    final = read_results(out).to_pandas(maps=True)
    assert len(final) == 10 and not final.duplicated(["image", "method", "target"]).any()
    assert not parts.exists() and final.error.isna().all()
    kept = final.set_index("image").loc[partial.image]
    for row, blob in zip(kept.itertuples(), partial.itertuples()):
        np.testing.assert_array_equal(row.map, decode_map(blob.map, blob.map_dtype, blob.map_shape, blob.map_scale))


# ---- a listing with boxes: the rectangle task --------------------------------------------------
def test_rectangle_listing_with_boxes_gives_pointing_and_energy(tmp_path):
    """The rectangle task's held-out images as PNGs, a CSV listing (label names, boxes in
    x0, y0, x1, y1) and a corrupt file. Oracle: onnxplain.evaluate on each stored map with
    the box; negatives (no box) get no pointing value."""
    samples = np.load(RECT / "samples.npz")
    model = onnxplain.load_model(RECT / "rectangle_cnn.onnx", preprocessing="none",
                                 labels=["no_rectangle", "rectangle"])
    lines = ["path,label,x0,y0,x1,y1"]
    picks = [int(i) for i in np.flatnonzero(samples["labels"] == 1)[:5]] + \
        [int(i) for i in np.flatnonzero(samples["labels"] == 0)[:2]]
    for i in picks:
        Image.fromarray(samples["images"][i]).save(tmp_path / f"s{i}.png")
        r0, c0, r1, c1 = (int(v) for v in samples["boxes"][i])
        name = "rectangle" if samples["labels"][i] == 1 else "no_rectangle"
        lines.append(f"s{i}.png,{name}," + (f"{c0},{r0},{c1},{r1}" if r0 >= 0 else ",,,"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    lines.append("bad.png,rectangle,1,1,5,5")
    listing = tmp_path / "val.csv"
    listing.write_text("\n".join(lines) + "\n")
    run = onnxplain.explain_dataset(model, listing, ["occlusion"], "true", out=tmp_path / "rect.parquet",
                                    options={"occlusion": {"mask_size": 8, "stride": 8}},
                                    metrics="pointing,energy", progress=False)
    df = read_results(run.out).to_pandas(maps=True)
    assert len(df) == 8 and df[df.image.str.endswith("bad.png")].error.notna().all()
    ok = df[df.error.isna()]
    for row in ok.itertuples():
        i = int(pathlib.Path(row.image).stem[1:])
        assert row.true_label == samples["labels"][i] == row.label
        if samples["labels"][i] == 1:
            r0, c0, r1, c1 = (int(v) for v in samples["boxes"][i])
            assert list(row.box) == [c0, r0, c1, r1]
            ev = onnxplain.evaluate(model, row.image, int(row.label), row.map, metrics=["pointing_game", "energy"],
                                    box=(c0, r0, c1, r1))
            assert row.pointing_game == ev.scores["pointing_game"]
            assert row.energy == pytest.approx(ev.scores["energy"], rel=1e-12)
        else:
            assert row.box is None and np.isnan(row.pointing_game) and np.isnan(row.energy)


# ---- in-memory arrays, float16 maps -----------------------------------------------------------
def test_arrays_with_labels_boxes_and_float16_maps(bundled, tmp_path):
    """Oracle: gradient_attribution on each working image; float16 storage is within
    2^-11 of max|map| (it stores map / max|map|)."""
    items = [{"image": data.chelsea(), "id": "cat", "label": "tabby", "box": (50, 20, 300, 250)},
             (data.coffee(), 968), data.astronaut()]
    run = onnxplain.explain_dataset(bundled, items, ["gradient"], ["true", 281], out=tmp_path / "a.parquet",
                                    map_dtype="float16", progress=False)
    df = read_results(run.out).to_pandas(maps=True)
    assert sorted(df.image.unique()) == ["array:1", "array:2", "cat"]
    astro = df[df.image == "array:2"]
    assert astro[astro.target == "true"].error.iloc[0] == "no true label for this image"
    for row in df[df.error.isna()].itertuples():
        img = {"cat": data.chelsea(), "array:1": data.coffee(), "array:2": data.astronaut()}[row.image]
        single = gradient_attribution(bundled, bundled.prepare(img)[0], int(row.label))
        peak = np.abs(single.score_map).max()
        assert np.abs(row.map - single.score_map).max() <= peak * 2.0 ** -11
    assert list(df[df.image == "cat"].box.iloc[0]) == [50, 20, 300, 250]


def test_map_encoding_round_trip():
    m = np.random.default_rng(0).normal(0, 1e-7, (7, 9)).astype(np.float32)
    np.testing.assert_array_equal(decode_map(*encode_map(m, "float32")), m)
    np.testing.assert_allclose(decode_map(*encode_map(m, "float16")), m, atol=np.abs(m).max() * 2.0 ** -11)


# ---- listing rules and refusals -------------------------------------------------------------------
def test_listing_kinds(photo_tree, tmp_path):
    tree = list_images(photo_tree)
    assert tree.kind == "image-folder" and tree.total == 5 and tree.has_labels
    flat = list_images(photo_tree, image_folder=False)
    assert flat.kind == "folder" and all(it.label is None for it in flat.items)
    pattern = list_images(str(photo_tree / "**" / "*.png"))
    assert pattern.kind == "glob" and [pathlib.Path(i.path).name for i in pattern.items] == ["coffee.png",
                                                                                        "chelsea_mirror.png"]
    txt = tmp_path / "list.txt"
    txt.write_text(f"# two images\n{photo_tree / 'cup' / 'coffee.png'}\n\n../{tmp_path.name}/nothing.jpg\n")
    items = list(list_images(txt).items)
    assert [pathlib.Path(i.path).name for i in items] == ["coffee.png", "nothing.jpg"]


def test_refusals_name_what_is_wrong(bundled, photo_tree, tmp_path):
    out = tmp_path / "x.parquet"
    with pytest.raises(ValueError, match="unknown method 'gradcan'"):
        onnxplain.explain_dataset(bundled, photo_tree, ["gradcan"], out=out)
    with pytest.raises(ValueError, match="has no option 'num_mask'"):
        onnxplain.explain_dataset(bundled, photo_tree, ["rise"], out=out, options={"rise": {"num_mask": 5}})
    with pytest.raises(LabelError, match="needs true labels"):
        onnxplain.explain_dataset(bundled, photo_tree, ["gradcam"], "true", out=out, image_folder=False)
    with pytest.raises(ValueError, match="need ground-truth boxes"):
        onnxplain.explain_dataset(bundled, photo_tree, ["gradcam"], out=out, metrics=["pointing"])
    odd = tmp_path / "odd"
    shutil.copytree(photo_tree, odd)
    (odd / "cup").rename(odd / "cups")
    with pytest.raises(LabelError, match="'cups'.*ImageFolder.*image_folder=False"):
        onnxplain.explain_dataset(bundled, odd, ["gradcam"], out=out)
    with pytest.raises(ResultsError, match="is a folder"):
        onnxplain.explain_dataset(bundled, photo_tree, ["gradcam"], out=tmp_path)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,label\na.jpg,1\n")
    with pytest.raises(ImageError, match="'path' \\(or 'image'\\) column"):
        list_images(bad_csv)
    with pytest.raises(ImageError, match="unknown keys \\['lable'\\]"):
        list(list_images([{"image": data.chelsea(), "lable": 3}]).items)
    foreign = tmp_path / "foreign.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(foreign)
    with pytest.raises(ResultsError, match="not an onnxplain results file"):
        onnxplain.explain_dataset(bundled, photo_tree, ["gradcam"], out=foreign)


def test_a_method_failing_on_every_image_stops_the_run(bundled, photo_tree, tmp_path):
    """A model/option problem is not an image's: the run stops instead of writing error rows."""
    with pytest.raises(OnnxplainError, match="failed on every image of the first batch"):
        onnxplain.explain_dataset(bundled, photo_tree, ["gradcam"], out=tmp_path / "f.parquet",
                                  options={"gradcam": {"feature_layer": "no_such_tensor"}}, progress=False)
    assert not list((tmp_path / "f.parquet.parts").glob("*.parquet"))


# ---- CLI and progress ---------------------------------------------------------------------------
def test_cli_run_resumes_and_rejects_bad_sets(photo_tree, tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    args = ["run", "--images", str(photo_tree), "--methods", "gradcam", "--label", "top", "true", "--out", str(out),
            "--set", 'gradcam.output_upsampling="bilinear"', "--no-progress"]
    assert main(args) == 0
    df = pd.read_parquet(out)
    assert len(df) == 10 and set(df.target) == {"top", "true"}
    assert all(json.loads(p)["output_upsampling"] == "bilinear" for p in df.params.dropna())
    assert main(args) == 0
    assert "0 rows written" in capsys.readouterr().out and len(pd.read_parquet(out)) == 10
    assert main(["run", "--images", str(photo_tree), "--set", "num_masks=3", "--out", str(out)]) == 2
    assert "METHOD.OPTION=VALUE" in capsys.readouterr().err


def test_progress_lines_when_piped():
    stream = io.StringIO()
    p = _Progress(10, True, stream=stream)
    p.last_line -= 11  # as if 11 s had passed
    p.update(4)
    p.close()
    lines = stream.getvalue().splitlines()
    assert lines and all("images/s" in ln and "ETA" in ln and "/10 images" in ln for ln in lines)
    seen = []
    q = _Progress(3, seen.append)
    q.update(1)
    assert seen[0]["done"] == 1 and seen[0]["total"] == 3 and seen[0]["eta_seconds"] is not None


def _rows(i0: int, n: int, image: str = "img") -> list[dict]:
    return [{"schema_version": SCHEMA_VERSION, "image": f"{image}{i}", "image_index": i, "method": "gradcam",
             "target": "top", "map": np.full(4, i, np.float32).tobytes(), "map_dtype": "float32", "map_shape": [2, 2],
             "options": "{}", "seconds": 0.0, "model": "m.onnx"} for i in range(i0, i0 + n)]


def test_a_fresh_run_streams_the_final_file_and_a_resumed_or_repeating_one_merges(tmp_path):
    """A fresh run's rows go to the final file as they are written, and finish() renames it into
    place. Oracle: merge_into of the same parts (the end-of-run merge it replaces), table for
    table; a key met twice and a resumed run fall back to that merge (first row per key)."""
    import pyarrow.parquet as pq

    from onnxplain.results import ResultWriter, merge_into

    out = tmp_path / "fresh.parquet"
    w = ResultWriter(out)
    w.write(_rows(0, 3))
    w.write(_rows(3, 2))
    assert (w.parts / "stream.parquet.tmp").exists()
    merge_into(w.existing(), tmp_path / "reference.parquet")
    w.finish()
    assert not w.parts.exists()
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "reference.parquet"))

    dup = tmp_path / "dup.parquet"                     # the same image twice (a listing naming it twice)
    w = ResultWriter(dup)
    w.write(_rows(0, 3))
    w.write(_rows(2, 2))
    assert not (w.parts / "stream.parquet.tmp").exists()
    w.finish()
    got = pq.read_table(dup)
    assert got.column("image").to_pylist() == ["img0", "img1", "img2", "img3"]
    assert got.equals(pq.read_table(tmp_path / "reference.parquet").slice(0, 4))

    w = ResultWriter(out)                              # resuming: out exists, so the parts are merged
    assert w._keys is None
    w.write(_rows(5, 1))
    w.finish()
    assert pq.read_table(out).column("image").to_pylist() == [f"img{i}" for i in range(6)]

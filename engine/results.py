"""The columnar result of a dataset run: one Parquet file, one row per (image, method, label).

Written by :func:`onnxplain.explain_dataset` / ``onnxplain run`` (embedded and Ray alike);
read back with :func:`read_results` (rows as :class:`~onnxplain.Explanation`, or a pandas
DataFrame), or directly by pandas, polars, DuckDB, Spark (plain Parquet, no extension types).

Schema version 1 (:data:`SCHEMA_VERSION`; also in the file's key-value metadata
``onnxplain.schema_version``). Columns, in order:

==================  =================  =========================================================
column              type               meaning
==================  =================  =========================================================
schema_version      int16              1
image               string             the image: its absolute path, or the id of an in-memory
                                       image (``"array:<i>"`` or the id the caller gave)
image_index         int64              position of the image in the listing (sorted paths)
method              string             method name (the registry's, e.g. "gradcam", "rise")
target              string             what was asked for this row: "top" (the model's top
                                       class), "true" (the image's true label) or a class
                                       index ("207"). (image, method, target) is the row key:
                                       unique in a file; a resumed run skips done keys
label               int64, null        the explained class index (null when it could not be
                                       resolved, e.g. the image is unreadable)
label_name          string, null       its class name
score               float32, null      the explained score (``Explanation.scores``: the model's
                                       output for the label on the working image)
predicted_index     list<int32>        the model's top-k classes on the working image, best first
predicted_name      list<string>       their names
predicted_score     list<float32>      their probabilities (softmax of logits; as-is for
                                       probability and sigmoid outputs)
true_label          int64, null        the image's true class index (ImageFolder folder, a
                                       listing's ``label`` column, or given with an array)
true_label_name     string, null
box                 list<float64>,null ground-truth box (x0, y0, x1, y1), pixels of the original
                                       image, end-exclusive (``img[y0:y1, x0:x1]``)
image_height        int32, null        the original image's size (before resizing)
image_width         int32, null
map                 binary, null       the raw map at the working size (the model's input size,
                                       the image resized to it): C-order little-endian values
                                       of ``map_dtype``; decode with :func:`decode_map`
map_dtype           string, null       "float32" or "float16"
map_shape           list<int32>, null  [h, w]
map_scale           float32, null      the map is ``values * map_scale`` (1.0 for float32;
                                       float16 stores ``map / max|map|`` so small gradients
                                       keep 11 bits of precision instead of underflowing)
params              string (JSON)      the method's resolved parameters (``Explanation.params``)
options             string (JSON)      the options requested (preset + overrides); a resumed
                                       run with different options for the same rows is refused
seconds             float64            this row's share of compute time (batched calls: the
                                       batch's time divided among its rows)
timings             string (JSON)      ``Explanation.timings`` (per call; batched: the batch's)
deletion            float64, null      deletion AUC (lower is better), when asked
insertion           float64, null      insertion AUC (higher is better), when asked
pointing_game       float64, null      1.0 hit / 0.0 miss, when asked and the image has a box
energy              float64, null      share of positive map mass in the box, when asked + box
error               string, null       why this row has no map (unreadable image, a method that
                                       failed on this image); null on success
model               string             the model file
==================  =================  =========================================================

Files: ``explain_dataset(out="results.parquet")`` writes completed batches as part files into
``results.parquet.parts/`` (each written under a temporary name and renamed into place, in
a background thread while the next batch runs, so a killed run loses at most the batch in
flight and the part being written) and, when the run ends, merges them into
``results.parquet`` (again via a temporary file and an atomic rename; rows deduplicated on
the key). :func:`read_results` also reads a ``.parts`` folder left by an interrupted run and
any directory of parts (a Ray run's, another tool's). A fresh run (no ``out``, no parts)
also appends each batch's rows to ``results.parquet.parts/stream.parquet.tmp`` (same
thread, right after its part), and its end renames that file into place instead of
reading every part back and writing them again (1.4 ms per Grad-CAM image of ~18); a run
that resumes, or meets a key twice (a listing that names an image twice), merges the parts.

Compression: zstd for every column but ``map``, which is stored uncompressed. A float map's
mantissas are close to random bytes: zstd saved ~10 % of the file (8.30 vs 9.23 MB for 48
Grad-CAM maps of 224 x 224 float32) for 2.5x the write time and 2.4x the read time, and a
run writes each map twice (its part, then the merge, which reads it back): ~1.2 ms per
image of a Grad-CAM run's ~20 ms (bench/results/dataset-*.md).
"""
from __future__ import annotations

import json
import os
import pathlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import OnnxplainError
from .result import Explanation
from .result import _jsonable

SCHEMA_VERSION = 1
KEY = ("image", "method", "target")
METRIC_COLUMNS = ("deletion", "insertion", "pointing_game", "energy")
MAP_DTYPES = ("float32", "float16")
PARTS_SUFFIX = ".parts"


def schema():
    """The pyarrow schema of a results file (version :data:`SCHEMA_VERSION`)."""
    import pyarrow as pa

    fields = [
        ("schema_version", pa.int16()), ("image", pa.string()), ("image_index", pa.int64()),
        ("method", pa.string()), ("target", pa.string()), ("label", pa.int64()), ("label_name", pa.string()),
        ("score", pa.float32()), ("predicted_index", pa.list_(pa.int32())), ("predicted_name", pa.list_(pa.string())),
        ("predicted_score", pa.list_(pa.float32())), ("true_label", pa.int64()), ("true_label_name", pa.string()),
        ("box", pa.list_(pa.float64())), ("image_height", pa.int32()), ("image_width", pa.int32()),
        ("map", pa.binary()), ("map_dtype", pa.string()), ("map_shape", pa.list_(pa.int32())),
        ("map_scale", pa.float32()), ("params", pa.string()), ("options", pa.string()), ("seconds", pa.float64()),
        ("timings", pa.string()), *((m, pa.float64()) for m in METRIC_COLUMNS), ("error", pa.string()),
        ("model", pa.string()),
    ]
    meta = {b"onnxplain.schema_version": str(SCHEMA_VERSION).encode(), b"onnxplain.key": ",".join(KEY).encode()}
    return pa.schema(fields, metadata=meta)


def column_names() -> list[str]:
    return [f.name for f in schema()]


def compression() -> dict[str, str]:
    """Parquet codec per leaf column (module notes): zstd, except the ``map`` column (none).
    Keyed by the Parquet column path (``predicted_index.list.element`` for a list column):
    pyarrow leaves a column missing from the dict uncompressed."""
    import pyarrow as pa

    return {(f.name + ".list.element" if pa.types.is_list(f.type) else f.name): ("none" if f.name == "map" else "zstd")
            for f in schema()}


class ResultsError(OnnxplainError):
    """A results file cannot be used (not onnxplain's, another schema version, conflicting options)."""


# ---- maps ---------------------------------------------------------------------------------
def encode_map(score_map: np.ndarray, dtype: str = "float32") -> tuple[bytes, str, list[int], float]:
    """(bytes, dtype, shape, scale) for the ``map*`` columns of a 2-D float map."""
    m = np.asarray(score_map, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"a results map must be 2-D (h, w); got shape {m.shape}.")
    if dtype == "float32":
        return m.astype("<f4").tobytes(), "float32", list(m.shape), 1.0
    if dtype != "float16":
        raise ValueError(f"map_dtype must be one of {list(MAP_DTYPES)}; got {dtype!r}.")
    peak = float(np.max(np.abs(m))) if m.size and np.all(np.isfinite(m)) else 0.0
    scale = peak if peak > 0 else 1.0
    return (m / np.float32(scale)).astype("<f2").tobytes(), "float16", list(m.shape), scale


def decode_map(data: bytes | None, dtype: str | None, shape: Sequence[int] | None, scale: float | None = 1.0
               ) -> np.ndarray | None:
    """The float32 map of one row from its ``map``, ``map_dtype``, ``map_shape``, ``map_scale``."""
    if data is None:
        return None
    arr = np.frombuffer(data, dtype={"float32": "<f4", "float16": "<f2"}[dtype]).astype(np.float32)
    arr = arr.reshape([int(s) for s in shape])
    return arr * np.float32(scale) if scale not in (None, 1.0) else arr


# ---- writing ------------------------------------------------------------------------------
def parts_dir(out: str | os.PathLike) -> pathlib.Path:
    out = pathlib.Path(out)
    return out.with_name(out.name + PARTS_SUFFIX)


def rows_to_table(rows: Sequence[dict[str, Any]]):
    """A pyarrow Table in :func:`schema` from row dicts (missing columns are null)."""
    import pyarrow as pa

    sch = schema()
    cols = {f.name: [r.get(f.name) for r in rows] for f in sch}
    return pa.Table.from_pydict(cols, schema=sch)


class ResultWriter:
    """Appends batches of rows to ``out`` resumably (see the module notes on files).

    ``done_keys()`` are the (image, method, target) keys already written (the file and any
    parts of an interrupted run); ``write(rows)`` puts one part file in place atomically;
    ``finish()`` merges everything into ``out``. One writer per ``out`` at a time (a lock
    file refuses a second concurrent run).
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = pathlib.Path(out)
        if self.out.is_dir():
            raise ResultsError(f"--out {str(self.out)!r} is a folder; give a file name such as results.parquet "
                               "(parts of a run go into a '.parts' folder beside it).")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.parts = parts_dir(self.out)
        self._lock = _lock(self.out.with_name(self.out.name + ".lock"))
        fresh = not self.out.exists() and not (self.parts.exists() and any(self.parts.glob("*.parquet")))
        self.parts.mkdir(exist_ok=True)
        self.rows_written = 0
        # A fresh run also streams its rows into the final file as it goes (module notes), so
        # finish() renames it into place instead of reading every part back; a resumed run,
        # or one that meets a key twice, merges the parts as before.
        self._stream: Any = None
        self._stream_path = self.parts / "stream.parquet.tmp"
        self._keys: set[tuple[str, str, str]] | None = set() if fresh else None

    def existing(self) -> list[pathlib.Path]:
        files = [self.out] if self.out.exists() else []
        return files + sorted(self.parts.glob("*.parquet"))

    def done(self) -> dict[tuple[str, str, str], str]:
        """Key -> requested options (JSON) of every row already written."""
        import pyarrow.parquet as pq

        out: dict[tuple[str, str, str], str] = {}
        for path in self.existing():
            _check_file(path)
            t = pq.read_table(path, columns=[*KEY, "options"])
            for image, method, target, options in zip(*(t.column(c).to_pylist() for c in (*KEY, "options"))):
                out[(image, method, target)] = options
        return out

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write one part (all rows of one batch) atomically: temporary name, fsync, rename."""
        if not rows:
            return
        import pyarrow.parquet as pq

        table = rows_to_table(rows)
        name = f"part-{self._next_index():06d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.parts / (name + ".tmp")
        pq.write_table(table, tmp, compression=compression())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.parts / name)
        self.rows_written += len(rows)
        self._append_to_stream(table, rows)

    def _append_to_stream(self, table: Any, rows: Sequence[dict[str, Any]]) -> None:
        if self._keys is None:
            return
        keys = [tuple(r.get(k) for k in KEY) for r in rows]
        if len(set(keys)) != len(keys) or not self._keys.isdisjoint(keys):
            self._drop_stream()                       # a key twice: finish() merges and deduplicates
            return
        import pyarrow.parquet as pq

        self._keys.update(keys)
        if self._stream is None:
            self._stream = pq.ParquetWriter(self._stream_path, schema(), compression=compression())
        self._stream.write_table(table)

    def _drop_stream(self) -> None:
        self._keys = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._stream_path.unlink(missing_ok=True)

    def _next_index(self) -> int:
        names = [p.name for p in self.parts.glob("part-*.parquet")]
        return 1 + max((int(n.split("-")[1]) for n in names), default=-1)

    def finish(self) -> pathlib.Path:
        """Merge ``out`` and every part into ``out`` (temporary file + atomic rename), drop the parts.
        A fresh run whose rows were streamed into the final file renames that file into place."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
            with open(self._stream_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self._stream_path, self.out)
        else:
            self._drop_stream()
            merge_into(self.existing(), self.out)
        for p in self.parts.glob("*"):
            p.unlink()
        self.parts.rmdir()
        self.close()
        return self.out

    def close(self) -> None:
        if self._stream is not None:              # not finished (an error): the parts stay for a resume
            self._drop_stream()
        if self._lock is not None:
            self._lock.close()
            try:
                os.unlink(self._lock.name)
            except OSError:
                pass
            self._lock = None


def merge_into(sources: Sequence[pathlib.Path], out: pathlib.Path) -> int:
    """Stream ``sources`` (row group by row group) into one file ``out``, first row per key kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    seen: set[tuple[str, str, str]] = set()
    count = 0
    with pq.ParquetWriter(tmp, schema(), compression=compression()) as writer:
        for path in sources:
            _check_file(path)
            pf = pq.ParquetFile(path)
            for g in range(pf.num_row_groups):
                t = pf.read_row_group(g)
                keys = list(zip(*(t.column(c).to_pylist() for c in KEY)))
                keep = [k not in seen for k in keys]
                seen.update(keys)
                if not all(keep):
                    t = t.filter(pa.array(keep))
                if t.num_rows:
                    writer.write_table(t.cast(schema()))
                    count += t.num_rows
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    return count


def _check_file(path: pathlib.Path) -> None:
    import pyarrow.parquet as pq

    try:
        sch = pq.read_schema(path)
    except Exception as exc:  # pyarrow's own error types
        raise ResultsError(f"{str(path)!r} is not a readable Parquet file ({str(exc).splitlines()[0]}).") from None
    meta = sch.metadata or {}
    version = meta.get(b"onnxplain.schema_version")
    if version is None:
        raise ResultsError(f"{str(path)!r} is not an onnxplain results file (no 'onnxplain.schema_version' in its "
                           "metadata); choose another --out.")
    if int(version) != SCHEMA_VERSION:
        raise ResultsError(f"{str(path)!r} has results schema version {int(version)}; this onnxplain writes and "
                           f"reads version {SCHEMA_VERSION}. Choose another --out.")


def _lock(path: pathlib.Path):
    fh = open(path, "a+")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise ResultsError(f"another run is writing {str(path)[:-5]!r} (lock {str(path)!r} is held); wait for it "
                           "or choose another --out.") from None
    return fh


# ---- reading ------------------------------------------------------------------------------
def result_files(path: str | os.PathLike) -> list[pathlib.Path]:
    """The Parquet files that make up the results at ``path``: the file, its ``.parts`` folder
    (an interrupted run), or every ``*.parquet`` in a folder."""
    p = pathlib.Path(path)
    if p.is_dir():
        files = sorted(p.rglob("*.parquet"))
        if not files:
            raise ResultsError(f"folder {str(p)!r} holds no .parquet files.")
        return files
    parts = parts_dir(p)
    files = ([p] if p.exists() else []) + (sorted(parts.glob("*.parquet")) if parts.is_dir() else [])
    if not files:
        raise ResultsError(f"results {str(p)!r} do not exist (nor an interrupted run's {str(parts)!r}).")
    return files


@dataclass
class Results:
    """Rows of a results file. ``table`` is the pyarrow Table (schema :func:`schema`)."""

    table: Any
    path: str

    def __len__(self) -> int:
        return self.table.num_rows

    def to_pandas(self, *, maps: bool = False):
        """A pandas DataFrame, one row per (image, method, label); ``maps=True`` replaces the
        ``map*`` columns by one ``map`` column of float32 (h, w) arrays."""
        df = self.table.to_pandas()
        if maps:
            df["map"] = [decode_map(*v) for v in zip(df["map"], df["map_dtype"], df["map_shape"], df["map_scale"])]
            df = df.drop(columns=["map_dtype", "map_shape", "map_scale"])
        return df

    def explanations(self, *, errors: bool = False) -> Iterator[Explanation]:
        """Each successful row as an :class:`Explanation` (``errors=True`` includes error rows,
        whose ``score_map`` is None)."""
        cols = self.table.column_names
        for batch in self.table.to_batches():
            for row in batch.to_pylist():
                if row["error"] is not None and not errors:
                    continue
                yield row_to_explanation({c: row.get(c) for c in cols})

    def explanation(self, image: str, method: str, target: str | int = "top") -> Explanation:
        """The row of one key (``target``: "top", "true" or a class index)."""
        import pyarrow.compute as pc

        t = self.table
        mask = pc.and_(pc.and_(pc.equal(t["image"], str(image)), pc.equal(t["method"], method)),
                       pc.equal(t["target"], str(target)))
        rows = t.filter(mask).to_pylist()
        if not rows:
            raise KeyError(f"no row for image={image!r}, method={method!r}, target={target!r} in {self.path}.")
        return row_to_explanation(rows[0])

    def errors(self):
        """The error rows as a DataFrame (image, method, target, error)."""
        import pyarrow.compute as pc

        t = self.table.filter(pc.is_valid(self.table["error"]))
        return t.select(["image", "method", "target", "error"]).to_pandas()


def read_results(path: str | os.PathLike, *, columns: Sequence[str] | None = None) -> Results:
    """Read a results file (or folder of parts) written by :func:`onnxplain.explain_dataset`.

    Parameters
    ----------
    path : str or PathLike
        ``results.parquet``; an interrupted run's parts are read too (deduplicated on the
        key (image, method, target)); a folder reads every ``*.parquet`` below it.
    columns : sequence of str, optional
        Read only these columns (e.g. leave out ``map`` for a quick table); the key
        columns are always read.

    Returns
    -------
    Results
        ``.to_pandas()``, ``.explanations()``, ``.explanation(image, method)``, ``.table``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = result_files(path)
    cols = None if columns is None else list(dict.fromkeys([*KEY, *columns]))
    if cols is not None:
        unknown = [c for c in cols if c not in column_names()]
        if unknown:
            raise ValueError(f"unknown results column(s) {unknown}; columns are {column_names()}.")
    tables = []
    for f in files:
        _check_file(f)
        tables.append(pq.read_table(f, columns=cols))
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if len(tables) > 1:  # an interrupted run may hold a row in both the file and a part
        keys = list(zip(*(table.column(c).to_pylist() for c in KEY)))
        seen: set = set()
        keep = []
        for k in keys:
            keep.append(k not in seen)
            seen.add(k)
        if not all(keep):
            table = table.filter(pa.array(keep))
    return Results(table, str(path))


def row_to_explanation(row: dict[str, Any]) -> Explanation:
    """One results row as an Explanation; row facts (image, true label, box, predictions,
    metrics, error) are extras."""
    smap = decode_map(row.get("map"), row.get("map_dtype"), row.get("map_shape"), row.get("map_scale"))
    label = row.get("label")
    extras = {k: row.get(k) for k in ("image", "image_index", "target", "true_label", "true_label_name", "box",
                                      "error", "model") if k in row}
    if row.get("image_height") is not None:
        extras["image_size"] = (row["image_height"], row["image_width"])
    if row.get("predicted_index") is not None:
        extras["predicted"] = list(zip(row["predicted_index"], row["predicted_name"], row["predicted_score"]))
    extras["metrics"] = {m: row[m] for m in METRIC_COLUMNS if row.get(m) is not None}
    return Explanation(
        method=row["method"], score_map=smap, labels=[] if label is None else [int(label)],
        label_names=[] if row.get("label_name") is None else [row["label_name"]],
        scores=np.asarray([] if row.get("score") is None else [row["score"]], np.float32),
        params=json.loads(row["params"]) if row.get("params") else {}, extras=extras,
        timings=json.loads(row["timings"]) if row.get("timings") else {})


def jsonable(value: Any) -> str:
    return json.dumps(_jsonable(value), sort_keys=True, default=str)


def iter_rows(results: Results) -> Iterable[dict[str, Any]]:
    for batch in results.table.to_batches():
        yield from batch.to_pylist()

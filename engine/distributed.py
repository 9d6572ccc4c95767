"""The Ray backend of :func:`onnxplain.explain_dataset` (``onnxplain run --ray [ADDRESS]``).

``pip install "onnxplain[ray]"`` (Ray Data). The driver lists the images and drops those
whose rows are all done (resume); Ray Data holds the list (``ray.data.from_items``) and
``map_batches`` sends batches of ``batch_size`` images to an actor pool of
:class:`Explainer` instances. Each actor loads the model once (session and gradient graphs
built once per actor), decodes its batch with a small thread pool and runs exactly the
embedded code path (:func:`onnxplain.dataset.process_batch`), so rows and maps are the
same as an embedded run's. The driver streams the actors' rows back
(``iter_batches``) into the same writer as the embedded run: one Parquet part per batch,
atomically renamed, merged into ``out`` at the end: same schema, same resume.

Where things run:

- ``ray=True``: a local Ray started for the run (and shut down after it), unless Ray is
  already initialised in the process, in which case that Ray is used (tests start one
  with ``ray.init(num_cpus=2)``);
- ``ray="auto"`` / ``ray="ray://head:10001"``: an existing cluster (``ray start --head``
  on the head node, ``ray start --address=HEAD:6379`` on the others). The image paths
  must be readable by the workers (a shared filesystem; in-memory arrays travel with the
  data) and the model file too (same path on every node, or pass it on shared storage);
  onnxplain must be installed on every node. The results are written by the driver.
- actors: ``ray_actors`` (default: the cluster's CPUs / 2, at least 1), each with
  ``num_cpus`` = CPUs / actors (and that many ONNX Runtime threads, where ``load_model``
  takes ``threads=``) and ``num_gpus=1`` when the model runs on CUDA
  (execution environment "gpu", or "auto" with a CUDA onnxruntime).
"""
from __future__ import annotations

import concurrent.futures as cf
import io
import json
import logging
from typing import Any

import numpy as np

from .errors import EnvironmentUnavailableError, ModelError
from .model import Model
from .model import load_model
from .preprocessing import Preprocessing
from .dataset import Item, _FirstBatchGuard, decode, process_batch
from .methods import keep_batch_buffers
from .results import rows_to_table

log = logging.getLogger(__name__)


def model_spec(model: Model) -> dict[str, Any]:
    """What an actor needs to load the same model: path and resolved declarations."""
    if "(derived)" in model.path:
        raise ModelError(f"{model.path}: a derived in-memory model cannot be sent to Ray actors; save it to a file "
                         "and load that.")
    return {"path": model.path, "preprocessing": model.preprocessing.to_dict(), "labels": list(model.class_names),
            "layout": model.layout, "output_kind": model.output_kind,
            "execution_environment": model.execution_environment}


def load_spec(spec: dict[str, Any]) -> Model:
    import inspect

    extra = {}
    if spec.get("threads") and "threads" in inspect.signature(load_model).parameters:
        extra["threads"] = spec["threads"]       # ORT intra-op threads = the actor's CPUs
    return load_model(spec["path"], preprocessing=_preprocessing(spec["preprocessing"]), labels=spec["labels"],
                      layout=spec["layout"], output_kind=spec["output_kind"],
                      execution_environment=spec["execution_environment"], **extra)


def _preprocessing(d: dict[str, Any]):
    fields = Preprocessing.__dataclass_fields__
    kwargs = {k: v for k, v in d.items() if k in fields}
    for k in ("mean", "std"):
        if k in kwargs:
            kwargs[k] = tuple(kwargs[k])
    if kwargs.get("input_size") is not None:
        kwargs["input_size"] = tuple(kwargs["input_size"])
    return Preprocessing(**kwargs)


def _record(item) -> dict[str, Any]:
    array = b""
    if item.array is not None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(item.array), allow_pickle=False)
        array = buf.getvalue()
    return {"index": int(item.index), "id": item.id, "path": item.path or "", "where": item.where,
            "label": json.dumps(item.label if not isinstance(item.label, np.generic) else item.label.item()),
            "box": json.dumps(list(item.box) if item.box is not None else None), "array": array}


def _item(rec: dict[str, Any]):
    array = None
    raw = rec["array"]
    if raw is not None and len(raw):
        array = np.load(io.BytesIO(bytes(raw)), allow_pickle=False)
    box = json.loads(rec["box"])
    return Item(int(rec["index"]), str(rec["id"]), path=str(rec["path"]) or None, array=array,
                label=json.loads(rec["label"]), box=tuple(box) if box is not None else None, where=str(rec["where"]))


class Explainer:
    """Ray Data callable class: one model session per actor, one batch of images per call."""

    def __init__(self, spec: dict[str, Any], config: Any, decode_threads: int = 2) -> None:
        self.model = load_spec(spec)
        self.config = config
        self.pool = cf.ThreadPoolExecutor(max_workers=max(1, decode_threads)) if decode_threads else None
        # the masking methods' batch buffers stay from one call to the next for the actor's life
        self._keep = keep_batch_buffers()
        self._keep.__enter__()

    def __call__(self, batch: dict[str, np.ndarray]):
        keys = list(batch)
        n = len(batch[keys[0]])
        items = [_item({k: batch[k][i] for k in keys}) for i in range(n)]
        if self.pool is not None:
            decoded = list(self.pool.map(lambda it: decode(self.model, it), items))
        else:
            decoded = [decode(self.model, it) for it in items]
        return rows_to_table(process_batch(self.model, decoded, self.config))


def run_on_ray(model: Model, source: Any, config: Any, writer: Any, report: Any, *, batch_size: int,
               address: Any, actors: int | None) -> dict[str, int]:
    """Run a dataset on Ray; rows go to ``writer`` as they come back. See the module notes."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise EnvironmentUnavailableError("ray=... / --ray needs Ray Data: pip install \"onnxplain[ray]\" (or "
                                          "\"ray[data]\").") from None
    spec = model_spec(model)
    keys_per_image = [(r.name, str(t)) for r in config.methods for t in config.targets]
    records, skipped = [], 0
    for it in source.items:
        if all((it.id, m, t) in config.done for m, t in keys_per_image):
            skipped += len(keys_per_image)
            report.skip(1)
            continue
        records.append(_record(it))
    stats = {"images": 0, "rows": 0, "errors": 0, "skipped": skipped}
    if not records:
        return stats
    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is not True:
            kwargs["address"] = str(address)
        ray.init(**kwargs)
        started_here = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_actors = actors or max(1, cpus // 2)
        gpu = model.device == "gpu"
        spec["threads"] = max(1, cpus // n_actors)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items(records, override_num_blocks=max(1, min(len(records), 4 * n_actors)))
        ds = ds.map_batches(Explainer, fn_constructor_kwargs={"spec": spec, "config": config},
                            batch_size=batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=n_actors),
                            num_cpus=max(1, cpus // n_actors) if not gpu else 1, num_gpus=1 if gpu else 0)
        guard = _FirstBatchGuard(config)
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows = table.to_pylist()
            guard.check(rows)
            writer.write(rows)
            images = len({r["image"] for r in rows})
            stats["images"] += images
            stats["rows"] += len(rows)
            stats["errors"] += sum(r.get("error") is not None for r in rows)
            report.update(images)
    finally:
        if started_here:
            ray.shutdown()
    return stats

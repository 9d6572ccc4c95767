"""Write the int8 (static QDQ) and float16 builds of the bundled EfficientNet-Lite0, with manifests.

The builds are NOT committed (the repository keeps one model binary): ``onnxplain compare
--variant int8|fp16`` builds them on demand into the cache (``onnxplain.variants.variant_model``),
and this script writes them beside the bundled model, or into ``--out``, for people who
want the files (e.g. to deploy or to inspect in Netron)::

    python models/make_variants.py                  # models/efficientnet_lite0_{int8,fp16}.onnx (+ .json)
    python models/make_variants.py --out /tmp/v --only int8

Each manifest copies the bundled model's (preprocessing, labels, input, output) and records
the build: tool versions, method, calibration images, sha256, and agreement with the float32
model on the calibration photographs (top-1 agreement, top-5 overlap, max |Δprob|).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import onnx  # noqa: E402
import onnxruntime  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain.variants import CALIBRATION_IMAGES, agreement_check, float16_model, quantize_int8, sample_images  # noqa: E402

BUILD = {
    "int8": "onnxruntime.quantization.quantize_static, QDQ format, int8 weights (per channel) and int8 activations, "
            "MinMax calibration on the calibration images through the model's preprocessing",
    "fp16": "onnxplain.variants.convert_float16: float32 initializers/constants/Casts -> float16, float32 input and "
            "output kept with a Cast after the input and before the output; values clipped to +-65504",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(HERE), help="output folder (default: models/)")
    p.add_argument("--only", choices=("int8", "fp16"), default=None)
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = onnxplain.load_model()
    base_manifest = json.loads((HERE / "efficientnet_lite0.json").read_text(encoding="utf-8"))
    images = sample_images()
    for kind in ("int8", "fp16"):
        if args.only and kind != args.only:
            continue
        path = out / f"efficientnet_lite0_{kind}.onnx"
        built = quantize_int8(model, path) if kind == "int8" else float16_model(model, path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest = dict(base_manifest)
        manifest.update({
            "name": f"{base_manifest['name']} — {kind} build",
            "file": path.name,
            "sha256": sha,
            "source": f"derived from efficientnet_lite0.onnx (sha256 {base_manifest['sha256']}) by models/make_variants.py",
            "build": {"method": BUILD[kind], "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                      "calibration_images": [f"skimage.data.{n}()" for n in CALIBRATION_IMAGES] if kind == "int8" else None},
            "verification": {"vs_float32": agreement_check(model, built, images)},
        })
        manifest.pop("export", None)
        path.with_suffix(".json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        size = path.stat().st_size / 1e6
        print(f"{kind}: {path} ({size:.1f} MB), vs float32: {manifest['verification']['vs_float32']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

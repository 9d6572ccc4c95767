"""The bundled model (EfficientNet-Lite0, ImageNet), its manifest and labels, as package data.

Read with :mod:`importlib.resources` (``onnxplain.models``); the scripts beside them
(``export_efficientnet_lite0.py``, ``make_variants.py``) made them and need the test extra.
"""

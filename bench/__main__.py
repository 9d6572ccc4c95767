"""``python -m bench``: the same as ``onnxplain bench``."""
import sys

from .cli import main

sys.exit(main())

"""``python -m bench``: run from a source checkout (bench is a development tool, not in the wheel)."""
import sys

from .cli import main

sys.exit(main())

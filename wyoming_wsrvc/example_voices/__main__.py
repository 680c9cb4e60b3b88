"""Print the folder of the example voice profile shipped in the package (for setup scripts)."""

import sys
from pathlib import Path

sys.stdout.write(f"{Path(__file__).resolve().parent}\n")

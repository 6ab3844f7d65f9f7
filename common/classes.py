"""A model's class names, in the order of its outputs, from the index_to_name.json training writes.

Read by the TorchServe handler (the .mar carries this module), by training and by the nightly report.
"""

from __future__ import annotations

import json
from pathlib import Path


def load_classes(index_to_name: Path) -> list[str]:
    """Class names by output index: {"0": "Shirts", "1": "Tops", ...} -> ["Shirts", "Tops", ...]."""
    names = json.loads(index_to_name.read_text())
    return [names[str(index)] for index in range(len(names))]

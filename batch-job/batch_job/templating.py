"""The Jinja2 environment the nightly report and the review page share: autoescaping always on,
so object keys and class names from the store or the model can never become markup."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"


def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name ends with
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

"""The values table of helm/refund-sorter/README.md, generated from values.schema.json (types, descriptions)
and values.yaml (defaults), between the two marker lines by which the docs include it (pymdownx.snippets).

    .venv/bin/python k8s/chart_readme.py            # rewrite the table (make chart-readme)
    .venv/bin/python k8s/chart_readme.py --check    # exit 1 if the table is out of date

Both fail, naming them, when a schema property has no description."""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "helm" / "refund-sorter"
START = "<!-- --8<-- [start:values-table] -->"
END = "<!-- --8<-- [end:values-table] -->"
MISSING = object()  # a key values.yaml does not set
JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


def resolved(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """The node with its $ref's target merged in; the node's own keys (its description) win."""
    if "$ref" not in node:
        return node
    target = resolved(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
    return {**target, **{key: value for key, value in node.items() if key != "$ref"}}


def type_name(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " or ".join(sorted({JSON_TYPES[type(value)] for value in node["enum"]}))
    kinds = node.get("type", "any")
    return " or ".join(kinds) if isinstance(kinds, list) else kinds


def rows(properties: dict[str, Any], values: Any, definitions: dict[str, Any], prefix: str = "") -> Iterator[Row]:
    """Every key, depth first in the schema's order: objects before their keys, array items as `[]`."""
    for name, raw in properties.items():
        node = resolved(raw, definitions)
        key = prefix + name
        value = values.get(name, MISSING) if isinstance(values, dict) else MISSING
        # An object whose keys get rows of their own shows its defaults there.
        default = "" if value is MISSING or "properties" in node else f"`{json.dumps(value)}`"
        yield Row(key, type_name(node), default, node.get("description", ""))
        if "properties" in node:
            yield from rows(node["properties"], value, definitions, key + ".")
        items = resolved(node.get("items", {}), definitions)
        if "properties" in items:
            yield from rows(items["properties"], MISSING, definitions, key + "[].")


def table(schema_rows: list[Row]) -> str:
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for row in schema_rows:
        # `<fullname>` would be read as an HTML tag, a `|` as a column.
        description = html.escape(row.description, quote=False).replace("|", "\\|")
        lines.append(f"| `{row.key}` | {row.type} | {row.default} | {description} |")
    return "\n".join(lines)


def with_table(readme: str, new_table: str) -> str:
    before, start, rest = readme.partition(START + "\n")
    _, end, after = rest.partition(END + "\n")
    if not (start and end):
        raise SystemExit(f"README.md needs the lines {START} and {END}, in that order, for the values table")
    return f"{before}{START}\n{new_table}\n{END}\n{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if README.md is out of date")
    parser.add_argument("--chart", type=Path, default=CHART, help="the chart's folder (default: %(default)s)")
    args = parser.parse_args(argv)
    schema = json.loads((args.chart / "values.schema.json").read_text())
    values = yaml.safe_load((args.chart / "values.yaml").read_text())
    schema_rows = list(rows(schema["properties"], values, schema.get("definitions", {})))
    undescribed = [row.key for row in schema_rows if not row.description.strip()]
    if undescribed:
        print(f"values.schema.json: no description for {', '.join(undescribed)}", file=sys.stderr)
        return 1
    readme_path = args.chart / "README.md"
    readme = readme_path.read_text()
    updated = with_table(readme, table(schema_rows))
    if updated == readme:
        return 0
    if args.check:
        print(f"{readme_path}: the values table is out of date; run `make chart-readme`", file=sys.stderr)
        return 1
    readme_path.write_text(updated)
    print(f"{readme_path}: values table rewritten ({len(schema_rows)} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate `schemas/*.json`: `uv run python -m fabric.config.write_schemas`.  [shell]"""

from pathlib import Path

from fabric.config.json_schema import json_schemas, render_schema


def main() -> None:
    out = Path(__file__).resolve().parents[2] / "schemas"
    out.mkdir(exist_ok=True)
    for name, schema in json_schemas().items():
        (out / name).write_text(render_schema(schema))
        print(f"wrote schemas/{name}")


if __name__ == "__main__":
    main()

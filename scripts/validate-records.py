#!/usr/bin/env python3
"""Validates JSON records against a schema of schemas/ with the reference implementation
(Python `jsonschema`, Draft 2020-12; installed into .deps/python by `provision.sh ops`).

    python3 scripts/validate-records.py schemas/labeled-output.schema.json < records.jsonl

One JSON value per input line. Schemas refer to each other by file name (`dead-letter.schema.json#…`),
resolved in the schema's folder. Prints every error of every invalid record and a summary line;
exits 1 when a record is invalid, 2 when the schema itself is not a valid Draft 2020-12 schema.
"""
import json
import pathlib
import sys

from jsonschema import Draft202012Validator
from referencing import Registry, Resource


def main() -> int:
    path = pathlib.Path(sys.argv[1])
    schema = json.loads(path.read_text())
    try:
        Draft202012Validator.check_schema(schema)
    except Exception as e:  # SchemaError: the schema is malformed
        print(f"{path}: not a valid Draft 2020-12 schema: {e}")
        return 2
    resources = [(p.name, Resource.from_contents(json.loads(p.read_text()))) for p in path.parent.glob("*.schema.json")]
    registry = Registry().with_resources(resources)
    validator = Draft202012Validator(schema, registry=registry)
    valid = invalid = 0
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        errors = list(validator.iter_errors(json.loads(line)))
        for e in errors:
            where = "/".join(str(p) for p in e.absolute_path) or "(record)"
            print(f"record {n}: {where}: {e.message}")
        invalid += bool(errors)
        valid += not errors
    print(f"{valid} valid, {invalid} invalid against {path.name}")
    return 1 if invalid or not valid else 0


if __name__ == "__main__":
    sys.exit(main())

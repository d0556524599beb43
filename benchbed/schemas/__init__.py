"""The result format, versioned: a JSON Schema for each document benchbed publishes — an entry's record
(``entry.schema.json``), a leaderboard's JSON twin (``leaderboard.schema.json``; version 1's, still
read, in ``leaderboard.v1.schema.json``) and a verified external result (``external.schema.json``) — and
the one digest a leaderboard carries of the records it was built from. A document states its
``schema_version``; a change of fields is a new version (an optional field added is not)."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from benchbed.errors import BenchbedError

ENTRY_VERSION = EXTERNAL_VERSION = 1
LEADERBOARD_VERSION = 2
Kind = Literal["entry", "leaderboard", "leaderboard.v1", "external"]
KINDS = ("entry", "leaderboard", "leaderboard.v1", "external")
HERE = Path(__file__).parent


@lru_cache(maxsize=None)
def schema(kind: Kind) -> dict:
    return json.loads((HERE / f"{kind}.schema.json").read_text())


@lru_cache(maxsize=None)
def _validator(kind: Kind):
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (schema(k)["$id"], Resource.from_contents(schema(k))) for k in KINDS)
    return jsonschema.Draft202012Validator(schema(kind), registry=registry)


def problems(document: Any, kind: Kind) -> list[str]:
    """Every way ``document`` departs from the ``kind`` schema, each with its JSON path."""
    found = sorted(_validator(kind).iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:200]}" for e in found]


def check(document: Any, kind: Kind, where: str) -> None:
    """Raise a one-line error naming ``where`` and the first problem when ``document`` does not validate."""
    found = problems(document, kind)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise BenchbedError(f"{where} is no valid {kind} document (schema {schema(kind)['$id']}): {found[0]}{more}")


def records_sha256(records: list[dict]) -> str:
    """sha256 over ``records``: each as canonical JSON (sorted keys, no spaces), in entry order, one per line."""
    lines = [json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
             for r in sorted(records, key=lambda r: r["entry"])]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()

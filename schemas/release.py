"""Release the current schemas: copy every changed event schema into ``schemas/history/<Event>/v<N>.avsc``.

Refuses a release that is not backward- and forward-compatible with every
released version (Avro resolution rules, checked by the Apache avro library).
Run: ``python -m schemas.release``.
"""

from __future__ import annotations

import json
import sys

from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import parse

from schemas.catalog import EVENTS, HISTORY_DIR, Catalog


def _ok(reader: dict, writer: dict) -> bool:
    res = ReaderWriterCompatibilityChecker().get_compatibility(parse(json.dumps(reader)), parse(json.dumps(writer)))
    return res.compatibility is SchemaCompatibilityType.compatible


def main() -> int:
    cat = Catalog()
    failed = False
    for name in EVENTS:
        cur = cat.get(name)
        released = cat.history[name]
        if any(v.fingerprint == cur.fingerprint for v in released):
            continue
        bad = [v.version for v in released if not (_ok(cur.expanded, v.expanded) and _ok(v.expanded, cur.expanded))]
        if bad:
            print(f"{name}: not compatible with released version(s) {bad}; not released", file=sys.stderr)
            failed = True
            continue
        path = HISTORY_DIR / name / f"v{cur.version}.avsc"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cur.expanded, indent=2) + "\n")
        print(f"released {name} v{cur.version} -> {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

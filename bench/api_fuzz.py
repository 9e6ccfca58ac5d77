"""API fuzzing from the OpenAPI schema, the long run: schemathesis generates requests for every operation of the app
(through its ASGI interface, no network), on an open server and on one with a token (with and without sending it),
and runs every check it has. Records the cases run and the failures per check.

Every JSON reply has a strict schema (``lookalike.server.replies``: no field it does not name), so the response
check compares each reply field by field. The open server's index has a clustering and a map and the token server's
has neither, so both variants of those replies are checked.

Run: ``python -m bench.api_fuzz [--examples 200]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

NAME = "api_fuzz"
FIXED = (
    "Replies are checked against strict response schemas: every JSON reply (search, matches, classify, clusters, "
    "duplicates, decisions, plan, map, selection, health) is a named model with `additionalProperties: false` all "
    "the way down, nullable only where the server sends null. Before, those 11 routes declared an open object, so "
    "`response_schema_conformance` compared nothing, and matches.png, map/points and map/sheet.png documented a "
    "JSON 200 of any shape beside their binary body; an extra or wrongly typed field now fails the suite "
    "(tests/test_api_schema.py).\n\n"
    "Found by earlier runs (every check on) and fixed, so the schema says exactly what the API accepts: the upload "
    "was a one-type `anyOf`, so clients generated from the schema sent it as a text field without a file name "
    "(a 422); optional form fields allowed `null`, which a form sends as the text `null` (a 422 for `keepers`); a "
    "decision allowed fewer than two ids or the same id twice (422/400); the filter fields `after`, `before`, "
    "`near` and `min_score` were any string, though the server refused all but its own forms (a 400), and now "
    "carry the pattern the server checks (a value outside it is refused even where Python would have parsed it); "
    "earlier still: undocumented status codes, content types and the `Allow` header of a 405."
)
TOKEN = "bench-api-fuzz-token-0123456789"


def fuzz_operation(operation: Any, headers: dict[str, str] | None, checks: list, examples: int, seen: set[str]) -> int:
    """Run ``examples`` generated cases of one operation with every check; failures (one line each) go to ``seen``."""
    from hypothesis import HealthCheck, given, settings

    cases = 0

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        nonlocal cases
        cases += 1
        try:
            case.call_and_validate(headers=headers, checks=checks)
        except (Exception, BaseExceptionGroup) as exc:  # keep generating: every case checked
            for line in str(exc).splitlines():
                if line.strip().startswith("- "):
                    seen.add(f"{operation.label}: {line.strip()[2:]}")

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # hypothesis re-raises what it shrank to
        seen.add(f"{operation.label}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200, help="generated cases per operation and server")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--shared", action="store_true", help="run without the bench lock: the section says so")
    args = ap.parse_args()

    import schemathesis
    from schemathesis.checks import CHECKS, load_all_checks

    from bench.report import markdown_table, write_section
    from lookalike import Index
    from lookalike.cluster import cluster_index
    from lookalike.explore import compute_map
    from lookalike.samples import make_samples
    from lookalike.server.app import create_app

    load_all_checks()
    checks = CHECKS.get_all()
    config = schemathesis.Config.from_dict(
        {
            "operations": [
                {  # the 400s no schema can state (see tests/test_api_schema.py)
                    "include-path-regex": "^/api/(search|classify|duplicates/decisions|duplicates/plan)$",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "404"]}},
                }
            ]
        }
    )
    rows = []
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        photos = make_samples(Path(tmp) / "photos", per_class=4, size=128)
        index = Index.build(photos, Path(tmp) / "idx", labels="folders", resolution=64)
        shutil.copytree(index.store.path, Path(tmp) / "idx-mapped")
        mapped = Index.open(Path(tmp) / "idx-mapped")
        cluster_index(mapped)
        compute_map(mapped, "pca")
        servers = {
            "open": (create_app(mapped), None),
            "token, sent": (create_app(index, token=TOKEN), {"Authorization": f"Bearer {TOKEN}"}),
            "token, not sent": (create_app(index, token=TOKEN), None),
        }
        for server, (app, headers) in servers.items():
            schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
            started = time.perf_counter()
            cases = 0
            failed_ops = 0
            for result in schema.get_all_operations():
                seen: set[str] = set()
                cases += fuzz_operation(result.ok(), headers, checks, args.examples, seen)
                for key in seen:
                    failures[key] += 1
                    examples.setdefault(key, server)
                failed_ops += bool(seen)
            total += cases
            rows.append([server, len(list(schema.get_all_operations())), cases, failed_ops,
                         f"{time.perf_counter() - started:.0f}"])  # fmt: skip
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            f"## API schema fuzzing (`{NAME}`)",
            "",
            f"schemathesis {schemathesis.__version__} against the app's own `/openapi.json` through ASGI, every "
            f"operation, up to {args.examples} generated cases each (valid and invalid), every check "
            f"({', '.join(c.__name__ for c in checks)}). Search, classify, decisions and plan may answer 400 to a "
            "schema-valid request for what no schema can state (bytes that are no decodable photo, a date that is no "
            "calendar day or `after` later than `before`, two files with the same content, two keepers in one "
            "group); any other schema-valid request must be accepted. Every JSON reply is checked against its "
            "strict schema (no undocumented field, exact types). Server: the sample index (16 images, 64 px); the "
            "open server's copy has a clustering and a map, the token servers' has neither.",
            "",
            markdown_table(["server", "operations", "cases", "operations with a failure", "seconds"], rows),
            "",
            f"Total: {total:,} cases; distinct failures: {len(failures)}"
            + "".join(f"\n- {k} (first seen: {examples[k]})" for k in sorted(failures)),
            "",
            FIXED,
            *(
                [
                    "",
                    "Run without the bench lock beside other work on the same cores: the seconds are inflated; "
                    "the cases and failures are what this run is about.",
                ]
                if args.shared
                else []
            ),
        ]
    )
    if not args.no_write:
        write_section(NAME, body, {"examples per operation": args.examples})
    print(body)


if __name__ == "__main__":
    main()

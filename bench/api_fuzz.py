"""API fuzzing from the OpenAPI schema, the long run: schemathesis generates requests for every operation of the app
(through its ASGI interface, no network) against a server over each state an index can be in (:data:`STATES`: empty,
unlabelled, labelled, with and without clusters, map, local features and decisions, int8 and fp32, a token on (sent
and not sent) and off), and runs every check it has. Records the cases run and the failures per check.

Every JSON reply has a strict schema (``lookalike.server.replies``: no field it does not name), so the response
check compares each reply field by field, in each state's variant. The checks' config is ``schemathesis.toml``.

Run: ``python -m bench.api_fuzz [--examples 30]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME = "api_fuzz"
FIXED = (
    "Replies are checked against strict response schemas: every JSON reply (search, matches, classify, clusters, "
    "duplicates, decisions, plan, map, selection, health) is a named model with `additionalProperties: false` all "
    "the way down, nullable only where the server sends null. Before, those 11 routes declared an open object, so "
    "`response_schema_conformance` compared nothing, and matches.png, map/points and map/sheet.png documented a "
    "JSON 200 of any shape beside their binary body; an extra or wrongly typed field now fails the suite "
    "(tests/test_api_schema.py). A run of the same checks with strict replies found one failure that this bench, "
    "run just before, had dropped (it kept only failures that list checks; it counts every failure now): "
    "`GET /api/matches: Invalid Schema Object in response definition`. Pydantic wrote the reply's tuples (sizes, keypoint rows) as "
    "`prefixItems`, which schemathesis' response check turns into a draft-4 `items` list and rejects (and many "
    "client generators cannot read); they are now fixed-length arrays, the server still checking each position. "
    "A test now makes every reply variant on purpose (fuzzing reached a 200 from /api/matches in about 2 cases of "
    "100, the suite's short profile in none).\n\n"
    "Found by earlier runs (every check on) and fixed, so the schema says exactly what the API accepts: the upload "
    "was a one-type `anyOf`, so clients generated from the schema sent it as a text field without a file name "
    "(a 422); optional form fields allowed `null`, which a form sends as the text `null` (a 422 for `keepers`); a "
    "decision allowed fewer than two ids or the same id twice (422/400); the filter fields `after`, `before`, "
    "`near` and `min_score` were any string, though the server refused all but its own forms (a 400), and now "
    "carry the pattern the server checks (a value outside it is refused even where Python would have parsed it); "
    "earlier still: undocumented status codes, content types and the `Allow` header of a 405."
)
ISSUE_32 = (
    "Found by a run of `st run --checks all` (30 examples per operation, token on) against an index built without "
    "labels, where the suite's one labelled index had found nothing (issue 32), and fixed: a class mode and "
    "classify answered 400, which is for what no schema can state; they are a 409 now, listed with its reason per "
    "operation (as is searching an index with no images, which the server now serves instead of refusing to start); "
    '`{"ids": [false]}` was taken as id 0 by the map selection and sheet (ids are strict integers); a body the '
    "parser could not read (JSON that is not UTF-8, multipart without its boundary) was an unlisted 400 (a 422 now); "
    "the plan accepted `keepers=0` sent as a raw string for its urlencoded form (decisions and plan are documented "
    "as the multipart forms the page sends, and `keepers` as one id or a list, which are the same bytes in a form); "
    "an empty upload was schema-valid and answered 400 (the schema says at least one byte; the server answers 422). "
    "A `class` is an enum of the index's classes, and an unknown one a 422 in every mode."
)
TOKEN = "bench-api-fuzz-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = ROOT / "schemathesis.toml"
"""The 400s no schema can state, allowed per operation (the same file `st run` reads from the repository root)."""


@dataclass(frozen=True)
class IndexState:
    """One state an index can be in, as the server sees it."""

    name: str
    labels: str = "folders"  # or "none"
    precision: str = "int8"  # or "fp32"
    clusters: bool = False
    map: bool = False
    features: bool = False  # local features computed (re-ranking and /api/matches then need no extraction)
    decisions: bool = False  # a duplicates decision recorded
    token: bool = False
    empty: bool = False  # every photo removed and the index updated: 0 images


STATES = (
    IndexState("empty", empty=True),
    IndexState("unlabelled, token", labels="none", token=True),
    IndexState("labelled, bare, fp32, token", precision="fp32", token=True),
    IndexState("labelled, clusters, map, features, decisions", clusters=True, map=True, features=True,
               decisions=True),
    IndexState("unlabelled, clusters, map, features, decisions, fp32", labels="none", precision="fp32",
               clusters=True, map=True, features=True, decisions=True),
)  # fmt: skip
"""Between them: empty, unlabelled, labelled; with and without clusters, map, local features and decisions; int8
and fp32; a token on (sent and not sent) and off."""


def build_state(state: IndexState, photos: Path, folder: Path, resolution: int = 64) -> Any:
    """An index in ``state`` at ``folder`` over a private copy of ``photos`` (the sample photos)."""
    from lookalike import Index

    own = folder / "photos"
    shutil.copytree(photos, own)
    index = Index.build(own, folder / "idx", labels=state.labels, precision=state.precision, resolution=resolution)
    if state.empty:
        for f in [p for p in own.rglob("*") if p.is_file()]:
            f.unlink()
        return Index.build(own, folder / "idx")
    if state.clusters:
        from lookalike.cluster import cluster_index

        cluster_index(index)
    if state.map:
        from lookalike.explore import compute_map

        compute_map(index, "pca", suspects=state.labels != "none")
    if state.features:
        index.local_features()
    if state.decisions:
        from lookalike.dedupe import decide, make_plan

        groups = make_plan(index)["groups"]
        assert groups, "the sample photos hold copies"
        decide(index, "keep-all", [f["path"] for f in groups[0]["files"]])
    return index


def cli_run(app: Any, headers: dict[str, str] | None, examples: int) -> tuple[int, int, str]:
    """``st run URL --checks all -n EXAMPLES`` (every phase: examples, coverage, fuzzing, stateful) against ``app``
    served by uvicorn on a loopback port, from the repository root so it reads ``schemathesis.toml``. Returns the
    cases generated, the unique failures and the summary line."""
    import re
    import socket
    import subprocess
    import sys
    import threading

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"http://127.0.0.1:{port}/openapi.json",
                   "--checks", "all", "-n", str(examples), "--no-color"]  # fmt: skip
        for name, value in (headers or {}).items():
            command += ["-H", f"{name}: {value}"]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False).stdout
    finally:
        server.should_exit = True
        thread.join(10)
    found = re.search(r"(\d+) generated, (?:(\d+) found (\d+) unique failures?|\d+ passed)", out)
    if found is None:
        raise RuntimeError(f"no summary in schemathesis' output:\n{out[-2000:]}")
    summary = next(line for line in out.splitlines() if "generated" in line).strip()
    return int(found.group(1)), int(found.group(3) or 0), summary


def schema_config() -> Any:
    import schemathesis

    return schemathesis.Config.from_path(CONFIG_FILE)


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
            lines = str(exc).splitlines()
            checks_failed = [line.strip()[2:] for line in lines if line.strip().startswith("- ")]
            # a failure that lists no checks (an invalid schema, an error in schemathesis) counts by its first line
            for line in checks_failed or [lines[0] if lines else type(exc).__name__]:
                seen.add(f"{operation.label}: {line}")

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # hypothesis re-raises what it shrank to
        seen.add(f"{operation.label}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return cases


def reply_cost(app: Any, rounds: int = 200) -> list[list[str]]:
    """Per-request cost of checking and encoding a reply: main's open path against the strict models, in one run.

    old: FastAPI checks the reply against ``dict[str, Any]`` (what main declared) and ShownJSONResponse encodes it as
    main did (``shown_json`` walks every string in Python, then ``json.dumps``). new: the route's strict model
    (``exclude_unset``) and ``json_body``. model only: the strict model with main's encoding, the cost of the check
    itself. Rounds interleave the three and the minimum of each is kept (shared cores: the least disturbed). Replies
    are real ones from the sample index, made large by repeating their rows (search at k = 100, clusters and
    duplicates of 100,000 ids, a selection of 100,000 ids); clusters and duplicates are checked and encoded once per
    clustering or plan and then served as bytes, so their row is a once-per-version cost."""
    import asyncio
    import json

    from fastapi.routing import serialize_response
    from fastapi.testclient import TestClient
    from fastapi.utils import create_model_field

    from lookalike.io import shown_json
    from lookalike.server.app import json_body

    client = TestClient(app)
    open_field = create_model_field("Response_open", dict[str, Any], mode="serialization")
    loop = asyncio.new_event_loop()

    def main_encode(content: Any) -> bytes:
        return json.dumps(shown_json(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    def reply(path: str, method: str, data: Any, strict: bool, encode: Callable[[Any], bytes]) -> bytes:
        route = next(r for r in app.routes if getattr(r, "path", None) == path and method in r.methods)
        field = route.response_field if strict else open_field
        return encode(loop.run_until_complete(serialize_response(field=field, response_content=data,
                                                                 exclude_unset=strict)))  # fmt: skip

    n = 100_000
    search = client.get("/api/search", params={"id": 0, "k": 10, "rerank": 10}).json()
    search["matches"] = [{**m, "rank": r + 1} for r, m in enumerate(search["matches"] * 10)]
    upload = client.post(
        "/api/search", data={"k": 10}, files={"file": ("q.jpg", app.state.service.paths[3].read_bytes())}
    ).json()
    upload["matches"] = [{**m, "rank": r + 1} for r, m in enumerate(upload["matches"] * 10)]
    clusters = client.get("/api/clusters").json()
    c0 = clusters["clusters"][0]
    clusters["clusters"] = [{**c0, "id": i + 1, "size": 100, "ids": list(range(i * 100, i * 100 + 100))}
                            for i in range(n // 100)]  # fmt: skip
    dups = client.get("/api/duplicates").json()
    assert dups["groups"], "the sample photos hold copies"
    g0 = dups["groups"][0]
    dups["groups"] = [{**g0, "id": g + 1, "files": [{**g0["files"][0], "id": 4 * g + k, "path": f"site/{g}/{k}.jpg",
                                                     "thumbnail": f"/api/thumbnails/{4 * g + k}"}
                                                    for k in range(4)]} for g in range(n // 4)]  # fmt: skip
    selection = {"ids": list(range(n)), "paths": [f"/photos/site-a/2023/img_{i:06d}.jpg" for i in range(n)]}
    cases = [
        ("health", "/api/health", "GET", client.get("/api/health").json(), rounds),
        ("search by id, k = 100, re-ranked", "/api/search", "GET", search, rounds),
        ("search of an upload, k = 100", "/api/search", "POST", upload, rounds),
        ("map selection of 100,000 ids", "/api/map/selection", "POST", selection, 5),
        ("clusters, 100,000 ids (once per clustering)", "/api/clusters", "GET", clusters, 5),
        ("duplicates, 100,000 files (once per plan)", "/api/duplicates", "GET", dups, 2),
    ]
    rows = []
    for name, path, method, data, reps in cases:
        variants = {"old": (False, main_encode), "new": (True, json_body), "model only": (True, main_encode)}
        same = [json.loads(reply(path, method, data, *variants[k])) for k in ("old", "new")]
        assert same[0] == same[1], f"{name}: the same reply either way"
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(reps):
            for key, (strict, encode) in variants.items():
                started = time.perf_counter()
                reply(path, method, data, strict, encode)
                best[key] = min(best[key], time.perf_counter() - started)
        size = len(reply(path, method, data, True, json_body))
        rows.append([name, f"{size / 1e3:,.0f}", f"{best['old'] * 1e3:.3f}", f"{best['new'] * 1e3:.3f}",
                     f"{best['new'] / best['old']:.2f}×", f"{best['model only'] * 1e3:.3f}",
                     f"{best['model only'] / best['old']:.2f}×"])  # fmt: skip
        print(rows[-1], flush=True)
    loop.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=30, help="generated cases per operation and server")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--shared", action="store_true", help="run without the bench lock: the section says so")
    ap.add_argument("--cost-rounds", type=int, default=200, help="rounds of the reply cost table (small replies)")
    ap.add_argument("--cli", action="store_true", help="also run `st run --checks all` over HTTP on each state")
    args = ap.parse_args()

    import schemathesis
    from schemathesis.checks import CHECKS, load_all_checks

    from bench.report import markdown_table, write_section
    from lookalike.samples import make_samples
    from lookalike.server.app import create_app

    load_all_checks()
    checks = CHECKS.get_all()
    config = schema_config()
    rows = []
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    total = 0
    cost: list[list[str]] = []
    cli_rows: list[list[Any]] = []
    cli_total = [0, 0]
    with tempfile.TemporaryDirectory() as tmp:
        photos = make_samples(Path(tmp) / "photos", per_class=4, size=128)
        for n, state in enumerate(STATES):
            index = build_state(state, photos, Path(tmp) / f"state{n}")
            app = create_app(index, token=TOKEN if state.token else None)
            if state.clusters and state.labels != "none" and not cost and args.cost_rounds:
                cost = reply_cost(app, args.cost_rounds)  # before fuzzing: its decisions change the groups
            runs = [("sent", {"Authorization": f"Bearer {TOKEN}"}), ("not sent", None)] if state.token else [
                ("off", None)]  # fmt: skip
            for token, headers in runs:
                schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
                started = time.perf_counter()
                cases = 0
                failed_ops = 0
                label = f"{state.name} (token {token})"
                for result in schema.get_all_operations():
                    seen: set[str] = set()
                    cases += fuzz_operation(result.ok(), headers, checks, args.examples, seen)
                    for key in seen:
                        failures[key] += 1
                        examples.setdefault(key, label)
                    failed_ops += bool(seen)
                total += cases
                rows.append([state.name, len(index), token, len(list(schema.get_all_operations())), cases,
                             failed_ops, f"{time.perf_counter() - started:.0f}"])  # fmt: skip
                print(rows[-1], flush=True)
                if args.cli:
                    generated, unique, summary = cli_run(app, headers, args.examples)
                    cli_rows.append([state.name, token, generated, unique, summary])
                    cli_total[0] += generated
                    cli_total[1] += unique
                    print(cli_rows[-1], flush=True)
    body = "\n".join(
        [
            f"## API schema fuzzing (`{NAME}`)",
            "",
            f"schemathesis {schemathesis.__version__} against the app's own `/openapi.json` through ASGI, every "
            f"operation, up to {args.examples} generated cases each (valid and invalid), every check "
            f"({', '.join(c.__name__ for c in checks)}). Search, classify, decisions and plan may answer 400 to a "
            "schema-valid request for what no schema can state (bytes that are no decodable photo, a date that is no "
            "calendar day or `after` later than `before`, two files with the same content, two keepers in one "
            "group); any other schema-valid request must be accepted, or refused for the index's state with a "
            "listed 409 (a class mode without labels, classify without two classes, an index with no images). Every "
            "JSON reply is checked against its "
            "strict schema (no undocumented field, exact types). The config is `schemathesis.toml` (what `st run` "
            "reads from the repository root). One server per state an index can be in (16 sample images, 64 px; "
            "`empty`: every photo removed and the index updated); a state with a token is run with it sent and "
            "not sent.",
            "",
            markdown_table(
                ["index state", "images", "token", "operations", "cases", "operations with a failure", "seconds"], rows
            ),
            "",
            f"Total: {total:,} cases; distinct failures: {len(failures)}"
            + "".join(f"\n- {k} (first seen: {examples[k]})" for k in sorted(failures)),
            *(
                [
                    "",
                    f"The same states through schemathesis' own command, every phase (examples, coverage, fuzzing, "
                    f"stateful), as a user runs it from the repository root: `st run http://127.0.0.1:PORT/openapi.json "
                    f"--checks all -n {args.examples}` (with `-H 'Authorization: Bearer …'` where the token is sent). "
                    f"Total: {cli_total[0]:,} cases, {cli_total[1]} unique failures.",
                    "",
                    markdown_table(["index state", "token", "cases", "unique failures", "summary"], cli_rows),
                ]
                if cli_rows
                else []
            ),
            "",
            ISSUE_32,
            "",
            FIXED,
            "",
            "What checking replies against their models costs per request (ms, minimum of interleaved rounds; "
            "old = main's `dict[str, Any]` reply and encoding, new = the strict model and `json_body`, model only = "
            "the strict model with main's encoding). Encoding the text as it is (`shown_json` only for a name that "
            "is not UTF-8) more than pays for the check; clusters and duplicates are checked and encoded once per "
            "clustering or plan and then served as bytes (on main, every request paid the old column).",
            "",
            markdown_table(["reply", "KB", "old", "new", "new / old", "model only", "model only / old"], cost)
            if cost
            else "(not measured in this run: --cost-rounds 0)",
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

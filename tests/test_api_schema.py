"""API fuzzing from the OpenAPI schema (schemathesis): every operation, with generated valid and invalid requests,
on an open server and on one that needs a token; every check must pass (no 5xx, every status code, content type and
header the schema documents, schema-valid requests accepted).

The default run is short (the hypothesis profile in conftest.py); ``bench/api_fuzz.py`` runs the long one.
"""

from __future__ import annotations

import json

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from bench.api_fuzz import STATES, IndexState, build_state, schema_config  # noqa: E402
from lookalike import Index  # noqa: E402
from lookalike.server.app import create_app  # noqa: E402

TOKEN = "schemathesis-token-0123456789"
CONFIG = schema_config()
"""schemathesis.toml: what no schema can say is a 400 with its own message (upload bytes that are no decodable photo,
a filter date that is no calendar day or an `after` later than `before`, a decision about two files with the same
content, two keepers chosen in one group). Everything else a schema-valid request can be is accepted (2xx), refused
for the index's state (409, saying what to run), or a 404 for an id that is not in this index."""


@pytest.fixture(scope="module")
def apps(sample_index: Index, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The open server's index has a clustering and a map, the token server's has neither: between them every
    variant of the clusters, map and health replies is checked against its schema."""
    import shutil

    from lookalike.cluster import cluster_index
    from lookalike.explore import compute_map
    from lookalike.store import CLUSTERS_FILE, MAP_FILE

    indexes = {}
    for name in ("open", "token"):
        folder = tmp_path_factory.mktemp("schema") / "idx"
        shutil.copytree(sample_index.store.path, folder)  # the server writes thumbnails into its index folder
        for derived in (CLUSTERS_FILE, MAP_FILE):  # whatever other tests left in the shared index: not these states
            (folder / derived).unlink(missing_ok=True)
        indexes[name] = Index.open(folder)
    cluster_index(indexes["open"])
    compute_map(indexes["open"], "pca")
    return {"open": create_app(indexes["open"]), "token": create_app(indexes["token"], token=TOKEN)}


def check_operation(operation: object, headers: dict[str, str] | None, checks: list, max_examples: int) -> list[str]:
    @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy())
    def check(case: object) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    try:
        check()
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup of the failed checks
        return [f"{operation.label}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"]
    return []


def run_schema_checks(app: object, headers: dict[str, str] | None, max_examples: int) -> list[str]:
    """Run every schemathesis check on every operation; returns one line per failure."""
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    checks = CHECKS.get_all()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    failures: list[str] = []
    for result in schema.get_all_operations():
        failures += check_operation(result.ok(), headers, checks, max_examples)
    return failures


@pytest.mark.parametrize("server", ["open", "token"])
def test_every_operation_passes_every_schema_check(apps: dict[str, object], server: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"} if server == "token" else None
    assert run_schema_checks(apps[server], headers, max_examples=settings.default.max_examples) == []


def test_token_server_without_token_matches_its_schema(apps: dict[str, object]) -> None:
    """Without the token every guarded operation answers 401, which its schema documents."""
    assert run_schema_checks(apps["token"], None, max_examples=3) == []


def open_parts(schema: dict, components: dict, where: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """Where ``schema`` lets a reply hold something undescribed: an object open to other fields, a value or an
    array item of any type. A map (``additionalProperties`` a schema, no named properties) is closed: its values
    are typed."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return [] if name in seen else open_parts(components[name], components, f"{where} > {name}", seen | {name})
    alternatives = [s for key in ("anyOf", "oneOf", "allOf") for s in schema.get(key, [])]
    if alternatives:
        return [p for i, s in enumerate(alternatives) for p in open_parts(s, components, f"{where}[{i}]", seen)]
    kind = schema.get("type")
    if kind is None and "const" not in schema and "enum" not in schema:
        return [f"{where}: any value"]
    found = []
    if kind == "object":
        extra = schema.get("additionalProperties", True)
        if extra is True or extra == {} or (isinstance(extra, dict) and schema.get("properties")):
            found.append(f"{where}: open object")
        elif isinstance(extra, dict):
            found += open_parts(extra, components, f"{where}.*", seen)
        for name, prop in schema.get("properties", {}).items():
            found += open_parts(prop, components, f"{where}.{name}", seen)
    if kind == "array":
        items = [*schema.get("prefixItems", []), *([schema["items"]] if "items" in schema else [])]
        if not items:
            found.append(f"{where}: array of anything")
        for i, item in enumerate(items):
            found += open_parts(item, components, f"{where}[{i}]", seen)
    return found


def test_every_json_reply_has_an_exact_schema(apps: dict[str, object]) -> None:
    """Every JSON success reply refers to named components that forbid undocumented fields (additionalProperties
    false) all the way down, so a client can be generated from the schema and schemathesis' response check compares
    every field. A route declared ``-> dict[str, Any]`` (an open object) fails here."""
    schema = apps["open"].openapi()
    components = schema["components"]["schemas"]
    replies, problems = set(), []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                for media, content in response.get("content", {}).items():
                    if media != "application/json":
                        continue
                    label = f"{method.upper()} {path} {status}"
                    top = content.get("schema", {})
                    refs = [top] if "$ref" in top else top.get("anyOf", [])
                    if not refs or any("$ref" not in r for r in refs):
                        problems.append(f"{label}: not a named component")
                    for r in refs:
                        name = r.get("$ref", "").rsplit("/", 1)[-1]
                        if components.get(name, {}).get("additionalProperties") is not False:
                            problems.append(f"{label}: {name} is open")
                    problems += open_parts(top, components, label)
                    if status.startswith("2"):
                        replies.add(f"{method.upper()} {path}")
    assert problems == []
    assert "prefixItems" not in json.dumps(schema), "tuples as fixed-length arrays (see replies.fixed_array)"
    assert replies == {
        *("POST /api/search", "GET /api/search", "GET /api/matches", "POST /api/classify", "GET /api/clusters"),
        *("GET /api/duplicates", "POST /api/duplicates/decisions", "POST /api/duplicates/plan", "GET /api/map"),
        *("POST /api/map/selection", "GET /api/health"),
    }


def test_reply_names_match_the_library() -> None:
    """The fixed names the replies spell out themselves (importing lookalike.cluster would load scipy)."""
    from typing import get_args

    from lookalike.dedupe import DECISION_KINDS, KEEP_RULES
    from lookalike.index import MODES
    from lookalike.server import replies

    assert get_args(replies.KeepRule) == KEEP_RULES
    assert get_args(replies.DecisionKind) == DECISION_KINDS
    assert get_args(replies.Mode) == MODES


def test_every_reply_variant_matches_its_schema(apps: dict[str, object], sample_index: Index) -> None:
    """Each kind of success reply, made on purpose and checked by schemathesis against the schema: generated cases
    rarely reach some of them (a re-ranked, filtered search; an upload that is a byte copy; a matches reply; a
    duplicates plan after a decision), so the fuzzing alone cannot be trusted to have compared them."""
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    checks = CHECKS.get_all()
    photo = sample_index.paths[0].read_bytes()
    label = sample_index.labels[0]
    filters = {"after": "2000-01-01", "near": "10,10,20000", "path": "**", "label": label, "min_score": "0.1"}
    multipart, form = "multipart/form-data", "application/x-www-form-urlencoded"
    variants = [
        ("GET", "/api/search", {"query": {"id": 0}}),
        ("GET", "/api/search", {"query": {"id": 0, "k": 100, "mode": "same-class", "rerank": 20}}),
        ("GET", "/api/search", {"query": {"id": 5, "mode": "other-classes", "class": label, **filters}}),
        ("POST", "/api/search", {"body": {"file": photo, "k": 3, "rerank": 5}, "media_type": multipart}),
        ("POST", "/api/search", {"body": {"id": 1, "min_score": "0.999"}, "media_type": multipart}),
        ("GET", "/api/matches", {"query": {"a": 0, "b": 1}}),
        ("POST", "/api/classify", {"body": {"file": photo}, "media_type": multipart}),
        ("POST", "/api/classify", {"body": {"id": 2}, "media_type": multipart}),
        ("GET", "/api/clusters", {}),
        ("GET", "/api/map", {}),
        ("GET", "/api/health", {}),
        ("POST", "/api/map/selection", {"body": {"ids": [0, 3]}, "media_type": "application/json"}),
        ("GET", "/api/duplicates", {}),
        ("POST", "/api/duplicates/plan", {"body": {}, "media_type": form}),
    ]
    seen: dict[str, list[dict]] = {}
    for server in ("open", "token"):
        headers = {"Authorization": f"Bearer {TOKEN}"} if server == "token" else None
        schema = schemathesis.openapi.from_asgi("/openapi.json", apps[server], config=CONFIG)

        def call(method: str, path: str, data: dict, schema: object = schema, headers: object = headers) -> dict:
            case = schema[path][method].Case(**data)
            response = case.call_and_validate(headers=headers, checks=checks)
            assert response.status_code == 200, f"{method} {path}: {response.text}"
            seen.setdefault(f"{method} {path}", []).append(response.json())
            return response.json()

        for method, path, data in variants:
            call(method, path, data)
        group = call("GET", "/api/duplicates", {})["groups"][0]
        ids = [f["id"] for f in group["files"]]
        call("POST", "/api/duplicates/decisions", {"body": {"kind": "keep-all", "ids": ids}, "media_type": form})
        kept = call("GET", "/api/duplicates", {})
        assert any(g["action"] == "keep-all" for g in kept["groups"]), server
        call("POST", "/api/duplicates/plan", {"body": {"keepers": [ids[-1]]}, "media_type": form})

    searches = seen["GET /api/search"] + seen["POST /api/search"]
    assert any(s["filter"] and s["note"] for s in searches), "a filtered search that leaves nothing says why"
    assert any(s["rerank"] and any(m["inliers"] is not None for m in s["matches"]) for s in searches)
    assert any("same_as" in s["query"] for s in searches), "an upload that is a copy of an indexed image"
    assert any(s["query_class"] and s["class_source"] for s in searches)
    assert {m["available"] for m in seen["GET /api/map"]} == {True, False}
    assert {c["available"] for c in seen["GET /api/clusters"]} == {True, False}


@pytest.fixture(scope="module")
def state_photos(tmp_path_factory: pytest.TempPathFactory) -> object:
    from lookalike.samples import make_samples

    return make_samples(tmp_path_factory.mktemp("states") / "photos", per_class=4, size=128)


@pytest.mark.parametrize("state", STATES, ids=[s.name for s in STATES])
def test_every_index_state_passes_every_schema_check(state: IndexState, state_photos: object, tmp_path: object) -> None:
    """The schema holds in each state an index can be in, not only the suite's: empty, unlabelled, labelled, with and
    without clusters, map, local features and decisions, int8 and fp32, a token on (sent and not sent) and off. A
    few cases per operation here; ``python -m bench.api_fuzz`` runs 30 per operation and state."""
    index = build_state(state, state_photos, tmp_path)
    app = create_app(index, token=TOKEN if state.token else None)
    runs = [{"Authorization": f"Bearer {TOKEN}"}, None] if state.token else [None]
    for headers in runs:
        assert run_schema_checks(app, headers, max_examples=4) == [], (state.name, headers)

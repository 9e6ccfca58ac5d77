"""API fuzzing from the OpenAPI schema (schemathesis): every operation, with generated valid and invalid requests,
on an open server and on one that needs a token; every check must pass (no 5xx, every status code, content type and
header the schema documents, schema-valid requests accepted).

The default run is short (the hypothesis profile in conftest.py); ``bench/api_fuzz.py`` runs the long one.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from lookalike import Index  # noqa: E402
from lookalike.server.app import create_app  # noqa: E402

TOKEN = "schemathesis-token-0123456789"
CONFIG = schemathesis.Config.from_dict(
    {
        "operations": [
            {
                # What no schema can say is a 400 with its own message: upload bytes that are no decodable photo,
                # a filter date that is no calendar day or an `after` later than `before`, a decision about two
                # files with the same content, two keepers chosen in one group. Everything else a schema-valid
                # request can be is accepted (2xx, or 404 for an id that is not in this index).
                "include-path-regex": "^/api/(search|classify|duplicates/decisions|duplicates/plan)$",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "404"]}},
            }
        ]
    }
)


@pytest.fixture(scope="module")
def apps(sample_index: Index, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    import shutil

    folder = tmp_path_factory.mktemp("schema") / "idx"
    shutil.copytree(sample_index.store.path, folder)  # the server writes thumbnails into its index folder
    index = Index.open(folder)
    return {"open": create_app(index), "token": create_app(index, token=TOKEN)}


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

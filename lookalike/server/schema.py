"""What the API says about itself and how it says it: the documented answers of each route (:func:`errors`), the
schema completed with what FastAPI cannot infer (:func:`complete_schema`, :func:`secure_schema`), and how every JSON
reply and error is encoded (:func:`json_body`, :func:`reply_content`, :func:`error_response`)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from lookalike.filters import FILTER_FIELDS
from lookalike.io import shown_json
from lookalike.server.replies import ErrorBody

IMAGE_TYPES: dict[str, dict[str, Any]] = {
    t: {} for t in ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff")
}

ERROR_WHY = {
    400: "The image cannot be used (not an image, truncated, too small, too many pixels) or the request is wrong.",
    401: "This server needs its token (`Authorization: Bearer TOKEN`, or the cookie from `POST /api/login`).",
    404: "No such image id or cluster, or the image is no longer on disk.",
    405: "Method not allowed on this path (the `Allow` header lists the ones that are).",
    409: "What this index holds does not allow it (the message says what to run).",
    413: "The upload is over the server's limit.",
    422: "A field is missing, of the wrong type or out of range, or the body cannot be parsed.",
}
BODY_UNPARSABLE = "There was an error parsing the body"
"""FastAPI's 400 for a body its parser cannot read (JSON that is not UTF-8); Starlette's multipart parser raises its
own 400s (a body without its boundary). Both are answered as the 422 of any other malformed request, which every
operation with a body lists."""
WHY_SEARCH_409 = (
    "The index has no images (run `lookalike index`), or a class mode (`same-class`, `other-classes`) was asked of "
    "an index without labels (build it with `lookalike index PHOTOS --labels folders`)."
)
WHY_CLASSIFY_409 = (
    "The index cannot classify: it needs at least two labelled classes (`lookalike index PHOTOS --labels folders`)."
)
WHY_SEARCH_400 = (
    "The upload is no usable photo (not an image, truncated, too small, too many pixels), or a filter date is no "
    "calendar day, or `after` is later than `before`."
)
WHY_PLAN_400 = "Two keepers chosen in one group."
WHY_DECISION_400 = "The images have the same content (a byte copy is a copy whatever is decided)."


# --- encoding --------------------------------------------------------------------------------------------------------


def json_body(content: Any) -> bytes:
    """``content`` as every JSON reply is sent (see :class:`ShownJSONResponse`), also for bodies rendered ahead.

    Names are almost always valid UTF-8, so the text is encoded as it is and only a reply that cannot be (a name
    with bytes that are not UTF-8) is redone through :func:`shown_json`: the same bytes as always going through it,
    without walking every string of a 100,000-id reply in Python first."""
    try:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (UnicodeEncodeError, TypeError):  # TypeError: a path object, which shown_json turns into its name
        return json.dumps(shown_json(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class ShownJSONResponse(JSONResponse):
    """JSON whose strings are valid UTF-8 whatever the file names: a name with bytes that are not UTF-8 is sent in
    its readable form (U+FFFD); clients address images by id, which is exact."""

    def render(self, content: Any) -> bytes:
        return json_body(content)


def reply_content(model: type[BaseModel], data: Any) -> Any:
    """``data`` checked against its reply model and made what the route sends: JSON types, and the fields the
    service left out still left out. A reply that does not fit its model raises ``ValidationError``."""
    return model.model_validate(data).model_dump(mode="json", exclude_unset=True)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error the API returns: ``{"error": "one line"}``."""
    return ShownJSONResponse({"error": message}, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "form"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


# --- the schema ------------------------------------------------------------------------------------------------------


def errors(
    *codes: int, body: dict[str, Any] | None = None, why: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The documented answers of a route: its errors as ``ErrorBody`` (``why`` says what a status means on this
    route) and, for binary routes, its 200 media type. The 401 of a server with a token is added to every operation
    by :func:`secure_schema`."""
    why = why or {}
    out: dict[int | str, dict[str, Any]] = {
        c: {"model": ErrorBody, "description": why.get(c, ERROR_WHY[c])} for c in codes
    }
    if body:
        out[200] = body
    return out


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of ``app`` answers on ``path`` (for the ``Allow`` header of a 405)."""
    methods: set[str] = set()
    scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
    for route in _leaf_routes(app.routes):
        match, _ = route.matches(scope)
        if match.name != "NONE":
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _leaf_routes(routes: Sequence[Any]) -> Iterator[Any]:
    """The routes themselves, also inside included routers (FastAPI >= 0.165 keeps an included router as one
    route that answers for all of its own; the routers here have no prefix, so their routes' paths are the app's)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        else:
            yield route


def _form_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The properties of every form body (multipart or urlencoded) in ``schema``, by body."""
    out = {}
    for ops in schema["paths"].values():
        for op in ops.values():
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
                    ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
                    out[ref] = schema["components"]["schemas"][ref]
    return out


def _form_of(schema: dict[str, Any], path: str, media: str = "multipart/form-data") -> dict[str, Any]:
    """The component schema of the form body of ``POST path``."""
    ref = schema["paths"][path]["post"]["requestBody"]["content"][media]["schema"]["$ref"]
    return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def complete_schema(schema: dict[str, Any], classes: Sequence[str] = ()) -> None:
    """Make the generated schema say exactly what the API accepts (checked by schemathesis in the test suite).

    - A form field cannot be null (a form has no null; an absent field is the default), and a field of one type is
      that type, not a one-way ``anyOf``: the upload then reads as a file part (``contentMediaType``), which clients
      generated from the schema send with a file name as the server needs.
    - Search and classify name their query in exactly one way: the ``file`` or an ``id``.
    - The filter fields carry the pattern the server checks (:data:`lookalike.filters.FILTER_FIELDS`), in the
      query and in the form.
    - A decision is about two or more different images.
    - An upload is at least one byte (an empty file is a 422, as any schema-invalid request).
    - A ``class`` is one of this index's classes (an enum of them, when it has labels).
    - Decisions and plans are documented as multipart forms (what the page sends; the server also reads a
      urlencoded form): a urlencoded body has no form a non-object could take that is not also a valid form, so a
      client (or a fuzzer) could not tell a malformed one from a good one.
    """
    for body in _form_fields(schema).values():
        for prop in body["properties"].values():
            if "anyOf" in prop:
                kinds = [t for t in prop.pop("anyOf") if t.get("type") != "null"]
                if len(kinds) == 1:
                    prop.update(kinds[0])
                else:
                    prop["anyOf"] = kinds
            if prop.get("default", 0) is None:
                del prop["default"]
    for path in ("/api/search", "/api/classify"):
        # exactly one of the two ways to name the query (both, or neither, is a 422)
        _form_of(schema, path)["oneOf"] = [{"required": ["file"]}, {"required": ["id"]}]
        schema["paths"][path]["post"]["requestBody"]["required"] = True
    _filter_patterns(schema)
    _form_of(schema, "/api/duplicates/decisions", "application/x-www-form-urlencoded")["properties"]["ids"][
        "uniqueItems"
    ] = True
    for path in ("/api/duplicates/decisions", "/api/duplicates/plan"):
        content = schema["paths"][path]["post"]["requestBody"]["content"]
        content["multipart/form-data"] = content.pop("application/x-www-form-urlencoded")
    keepers = _form_of(schema, "/api/duplicates/plan")["properties"]["keepers"]
    # in a form one id and a list of one are the same bytes: say both, so neither reads as the wrong type
    keepers["anyOf"] = [{"type": "integer"}, {"type": "array", "items": keepers.pop("items")}]
    keepers.pop("type")
    for path in ("/api/search", "/api/classify"):
        props = _form_of(schema, path)["properties"]
        props["file"]["minLength"] = 1
        if "class" in props and classes:
            props["class"]["enum"] = list(classes)
    if classes:
        for param in schema["paths"]["/api/search"]["get"]["parameters"]:
            if param["name"] == "class":
                param["schema"] = {"type": "string", "enum": list(classes), "title": "Class"}


def _filter_patterns(schema: dict[str, Any]) -> None:
    """The written form of each filter field (``FilterField.written``) as its ``pattern``, in form and query."""
    form_props = _form_of(schema, "/api/search")["properties"]
    for field in FILTER_FIELDS:
        if field.written is None:
            continue
        pattern, human = f"^{field.written}$", f" Written as {field.written_as}; blank = unset."
        form_props[field.name]["pattern"] = pattern
        form_props[field.name]["description"] += human
        for param in schema["paths"]["/api/search"]["get"]["parameters"]:
            if param["name"] == field.name:
                param["schema"] = {"type": "string", "pattern": pattern, "title": param["schema"].get("title")}
                param["description"] = param.get("description", "") + human


def secure_schema(schema: dict[str, Any], cookie: str) -> None:
    """A server with a token: its two ways to send it, required (and a 401 documented) on every operation."""
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "The server's token (serve --token)."},
        "cookie": {"type": "apiKey", "in": "cookie", "name": cookie},
    }
    unauthorised = {
        "description": ERROR_WHY[401],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for path, ops in schema["paths"].items():
        for op in ops.values():
            op["responses"] = {"401": unauthorised, **op["responses"]}
            if path != "/api/login":
                op["security"] = [{"bearer": []}, {"cookie": []}]

"""Who may reach the server and what every answer carries: the loopback rule, the token (checked by :class:`Guard`
on every request, set as a cookie by ``POST /api/login``), the security headers, and the upload limit
(:class:`BodyLimit`). Both middlewares are pure ASGI (not ``BaseHTTPMiddleware``), so file and streaming responses
pass through unbuffered."""

from __future__ import annotations

import hmac
import ipaddress
import socket

from fastapi import HTTPException
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.errors import ConfigError
from lookalike.server.schema import error_response

TOKEN_COOKIE = "lookalike_token"
MIN_TOKEN_CHARS = 16
OPEN_PATHS = ("/", "/api/login", "/docs", "/openapi.json")
"""The page shell, the docs shell, the schema (the API's shape, public anyway) and the login call: no index data, and
the page must load to ask for the token."""
OPEN_PREFIXES = ("/static/", "/docs-assets/")
SECURITY_HEADERS = {
    # Own origin only: no CDN, no inline script, no framing (clickjacking), no plugins; data:/blob: images are the
    # page's icon and the preview of a photo picked on the user's own machine.
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}
MULTIPART_SLACK = 64 * 1024
"""Room for multipart headers and the small form fields on top of the image itself."""
BEARER_REALM = {"WWW-Authenticate": 'Bearer realm="lookalike"'}


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (a name counts only if it resolves to loopback)."""
    name = host.strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_token(token: str | None) -> str | None:
    """A token guessable in a lifetime of tries is no lock: refuse short ones with a way to make a good one."""
    if token is None:
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
        raise ConfigError(
            f"token must be at least {MIN_TOKEN_CHARS} printable characters without spaces; make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`",
            setting="token",
        )
    return token


def same_token(given: str | bytes, token: str | bytes) -> bool:
    """Compared in constant time (``hmac.compare_digest``)."""
    a = given.encode() if isinstance(given, str) else given
    b = token.encode() if isinstance(token, str) else token
    return hmac.compare_digest(a, b)


def token_cookie(response: Response, token: str, *, https: bool) -> None:
    """The cookie ``POST /api/login`` sets, so the page and its images need no header."""
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        httponly=True,  # page scripts never see it
        samesite="strict",  # other sites' pages cannot make the browser send it
        secure=https,
        max_age=30 * 86400,
    )


class Guard:
    """Security headers on every response and, with a token, a 401 for anything but the page shell without it.

    The token is compared in constant time from the ``Authorization: Bearer`` header or the HttpOnly cookie the page
    gets from ``POST /api/login``.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def allowed(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        scheme, _, given = auth.partition(b" ")
        if scheme.lower() == b"bearer" and same_token(given.strip(), self.token):
            return True
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == TOKEN_COOKIE.encode() and same_token(value, self.token):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        if not self.allowed(scope):
            await error_response(
                401,
                "this server needs its token: send `Authorization: Bearer TOKEN`, or enter it on the page",
                BEARER_REALM,
            )(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


class BodyLimit:
    """Refuse request bodies over ``max_bytes``: by Content-Length up front, else by counting chunks as they arrive.

    Starlette spools a whole multipart body before the endpoint sees it, so the limit has to sit in front of the
    parser; raising HTTPException from ``receive`` is passed through FastAPI's body parsing unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, message: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await JSONResponse({"error": self.message}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, limited, send)

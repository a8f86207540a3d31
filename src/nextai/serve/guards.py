"""What stands before every route of `nextai serve`: an API key (`Authorization: Bearer KEY`, as vLLM's
`--api-key` and OpenAI's clients send it) and a bound on the request body. Both answer before any handler runs."""

import hmac
import ipaddress

from fastapi.responses import JSONResponse

from nextai.errors import NextaiError

OPEN_PATHS = frozenset({"/health"})  # probes need no key (a container's health check, a load balancer)
API_KEY_VARIABLE = "NEXTAI_API_KEY"


def error_body(path: str, status: int, message: str) -> dict:
    """An error in the shape the route's clients read: OpenAI's `{"error": {...}}` under /v1, FastAPI's `detail`
    elsewhere (the challenge's API)."""
    if path.startswith("/v1/") or path == "/v1":
        kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
                429: "rate_limit_error", 503: "server_error", 504: "timeout"}.get(
            status, "invalid_request_error" if status < 500 else "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return {"detail": message}


class ApiKey:
    """ASGI middleware: with a key set, every path but `OPEN_PATHS` needs `Authorization: Bearer <key>` (401 else)."""

    def __init__(self, app, key: str | None) -> None:
        self.app = app
        self.key = key.encode() if key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.key is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key):
            await self.app(scope, receive, send)
            return
        message = "missing or wrong API key: send Authorization: Bearer <key>"
        response = JSONResponse(error_body(scope["path"], 401, message), status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class BodyLimit:
    """ASGI middleware: bodies over `max_bytes` (declared or streamed) are answered 413 before any handler."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def reject(self, scope, receive, send) -> None:
        body = error_body(scope["path"], 413, f"request body over {self.max_bytes} bytes")
        await JSONResponse(body, status_code=413)(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.reject(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self.reject(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None, unauthenticated: bool) -> None:
    """A server reachable from other machines asks for a key first; `unauthenticated` says so on purpose (the
    challenge's container, whose HELM client sends no key)."""
    if api_key is not None and not api_key.strip():
        raise NextaiError("serve: --api_key is empty")
    if is_loopback(host) or api_key or unauthenticated:
        return
    raise NextaiError(f"serve: --host {host} is reachable from other machines: set --api_key KEY (or "
                      f"{API_KEY_VARIABLE}), or --unauthenticated true to serve without one (the challenge's "
                      f"container, where HELM sends no key)")

"""Whose results are whose: every result belongs to who made it.

- With `--auth`, a result belongs to the logged-in user (`user:<name>`).
- Otherwise to the browser that made it: `VisitorCookie` gives each browser a random id in an
  HttpOnly cookie (partitioned when served over HTTPS, so it also holds inside a Space's frame).
  A client that keeps no cookies (a raw API call) owns nothing it can list later.
- The operator on this machine sees every result: a request from loopback, addressed to a
  local host name, with no proxy's forwarding headers, on a server without a share link and not
  on a Space. `--shared-history` makes every visitor see everything (a private deployment).

The service keeps each owner's results in a folder of its own (`ldm_core.history.owner_folder`);
the output folder is not among Gradio's public file routes, so a result reaches its owner only as
the copy Gradio makes for the page that shows it.
"""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from http.cookies import SimpleCookie

COOKIE = "ldm_visitor"
VISITOR_ID = re.compile(r"^[0-9a-f]{32}$")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
FORWARDING = (b"x-forwarded-for", b"forwarded", b"x-forwarded-host", b"x-real-ip")
MAX_AGE = 400 * 24 * 3600       # the longest a browser keeps a cookie


@dataclass
class Policy:
    shared_history: bool = False   # every visitor sees every result (--shared-history)
    share_link: bool = False       # a share tunnel reaches this server from loopback: loopback is no owner


POLICY = Policy()


def configure(shared_history: bool = False, share_link: bool = False) -> None:
    """Set once at start-up (webui.main)."""
    POLICY.shared_history = shared_history
    POLICY.share_link = share_link


@dataclass(frozen=True)
class Owner:
    key: str | None        # "user:alice", "visitor:<id>", or None: nobody's (no login, no cookie)
    sees_all: bool         # may list every result


def visitor_id(headers) -> str | None:
    """The visitor id in a request's cookies (`headers`: ASGI pairs or a mapping), if a valid one."""
    raw = headers.get(b"cookie", b"") if isinstance(headers, dict) else dict(headers).get(b"cookie", b"")
    jar = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except Exception:  # a malformed cookie header: no id
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None and VISITOR_ID.match(morsel.value) else None


def is_operator(scope) -> bool:
    """A request from this machine's own browser (see the module's docstring)."""
    if POLICY.share_link or os.environ.get("SPACE_ID"):
        return False
    peer = (scope.get("client") or ("",))[0]
    headers = dict(scope.get("headers") or [])
    host = _hostname(headers.get(b"host", b"").decode("latin-1").lower())
    return peer in ("127.0.0.1", "::1") and host in LOCAL_HOSTS and not any(h in headers for h in FORWARDING)


def _hostname(host: str) -> str:
    """'localhost:7860' -> 'localhost'; '[::1]:7860' -> '::1'."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def owner_of(request) -> Owner:
    """The owner of what a Gradio request (gr.Request) makes, and whether it may see everything."""
    inner = getattr(request, "request", None)
    scope = getattr(inner, "scope", None) or {}
    user = getattr(request, "username", None)
    sees_all = POLICY.shared_history or (bool(scope) and is_operator(scope))
    if user:
        return Owner(f"user:{user}", sees_all)
    visitor = visitor_id(scope.get("headers") or [])
    return Owner(f"visitor:{visitor}" if visitor else None, sees_all)


class VisitorCookie:
    """ASGI middleware: a browser without a visitor id gets one (a Set-Cookie on the response),
    and the request itself carries it on, so its first event already has an owner."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or visitor_id(scope.get("headers") or []):
            await self.app(scope, receive, send)
            return
        new = secrets.token_hex(16)
        headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"cookie"]
        old = dict(scope.get("headers") or []).get(b"cookie", b"")
        cookie = (old + b"; " if old else b"") + f"{COOKIE}={new}".encode()
        scope = {**scope, "headers": [*headers, (b"cookie", cookie)]}
        secure = scope.get("scheme") == "https" or dict(headers).get(b"x-forwarded-proto", b"") == b"https"
        attributes = "; Secure; SameSite=None; Partitioned" if secure else "; SameSite=Lax"
        set_cookie = f"{COOKIE}={new}; Path=/; Max-Age={MAX_AGE}; HttpOnly{attributes}".encode()

        async def with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", set_cookie)]}
            await send(message)
        await self.app(scope, receive, with_cookie)

"""What the web server adds around Gradio's own routes for a public link, a Space or `--listen`.

`SecurityLayer` is the outermost ASGI layer of Gradio's app (installed by `lifespan()`, which
Gradio runs before the server accepts its first request):

- **CORS**: a request whose `Origin` is not the page's own (its `Host` or `X-Forwarded-Host`) nor
  one the operator allowed is refused (403) unless it is a plain GET/HEAD, and no response carries
  `Access-Control-Allow-*` for it. Gradio itself reflects any origin with credentials when the
  host is not localhost; that never reaches a browser now.
- **Headers** on every response: `X-Content-Type-Options: nosniff`, a Content-Security-Policy
  limited to what cannot break Gradio's page (`frame-ancestors`, `object-src`, `base-uri`),
  `X-Frame-Options` where no other framer is allowed, `Referrer-Policy`.
- **Client address** (`client_key`): the peer, or behind a trusted proxy the right-most
  `X-Forwarded-For` hop that is not itself a trusted proxy. No proxy is trusted until
  `trust_proxies()` says which (`--trusted-proxy`, the share tunnel, a Space's front end).
- **Login**: with a password, a request without a valid login session reaches only what the login
  page needs (`OPEN_PATHS`, `OPEN_PREFIXES`, `POST /login`); anything else is answered 401 before
  Gradio sees it, and an HTML page before login carries no API description. Failed logins are
  throttled per client: after 3 failures each attempt waits 1, 2, 4, ... up to 30 s, one attempt
  at a time per client; a success resets the count.
- **MCP** (`--mcp`, server/mcp_tools.py): the MCP routes are behind the same login, which an MCP
  client gives as HTTP Basic (throttled as the login form is); each MCP request is stamped with its
  client and user, so that Gradio's loopback call of the endpoint counts as theirs.
- **Monitoring and run history**: `/monitoring*` exists only when the operator turned it on (then
  behind the login like the rest); Gradio's run-history routes refuse a request that calls itself
  `localhost` without coming from this machine.
- **Errors**: a failure Gradio reports as a bare `null` (errors are not shown) gets a message.
- **Size**: a request body over `max_body_bytes` (the upload limit and some slack) is refused
  (413) or cut off, on every route, Gradio's component server included.
- **Cache**: a janitor removes uploads and results from Gradio's cache older than a day, and the
  oldest ones while the cache is over its size bound.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import cookie_parser

from .mcp_tools import REALM, McpGate, is_mcp
from .mcp_tools import install as install_mcp

log = logging.getLogger("security")

SAFE_METHODS = {"GET", "HEAD"}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}
# Gradio answers a failure outside the studio's code (a malformed file reference, ...) with a bare
# null when errors are not shown; a message replaces it
NULL_ERRORS = ((b"event: error\ndata: null", b'event: error\ndata: "%s"'), (b'"error":null', b'"error":"%s"'),
               (b'"error": null', b'"error": "%s"'))
NULL_MESSAGE = b"the request could not be processed: check its inputs (types, files, values)"
API_INFO = re.compile(rb"<script>window\.gradio_api_info\s*=.*?</script>", re.S)


OPEN_PATHS = {"/", "/favicon.ico", "/theme.css", "/robots.txt", "/logout",
              "/gradio_api/startup-events"}    # Gradio's launch() calls this one itself, without a login
OPEN_PREFIXES = ("/assets/", "/static/")
RUN_HISTORY = ("/gradio_api/runs", "/gradio_api/run-history")
LOOPBACK_NETS = ("127.0.0.0/8", "::1/128")
PRIVATE_NETS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
CLIENT = "ldm.client"       # the scope key where SecurityLayer keeps its decision
_trusted: tuple = ()        # networks whose X-Forwarded-For is believed: none until trust_proxies()


def proxy_network(text: str):
    """'10.1.2.3' or '10.0.0.0/8' or '::1' -> an ip_network (ValueError if it is neither)."""
    return ipaddress.ip_network(str(text).strip(), strict=False)


def trust_proxies(addresses=(), share: bool = False, space: bool = False) -> tuple:
    """Say, once at start-up, whose `X-Forwarded-For` `client_key` believes: `addresses` (addresses
    or CIDR networks, `--trusted-proxy`), with `share` the share tunnel's local client (loopback),
    with `space` a Hugging Face Space's front end (loopback and private networks). Uvicorn's own
    rewriting of the peer from that header (it trusts loopback by default) is turned off for the
    servers started after this call: the layer decides, from the real peer."""
    global _trusted
    nets = [proxy_network(a) for a in addresses]
    if share or space:
        nets += [proxy_network(n) for n in LOOPBACK_NETS]
    if space:
        nets += [proxy_network(n) for n in PRIVATE_NETS]
    _trusted = tuple(dict.fromkeys(nets))
    os.environ["FORWARDED_ALLOW_IPS"] = ""
    return _trusted


def _ip(text: str):
    """An address as a client or an X-Forwarded-For hop names it ('1.2.3.4', '1.2.3.4:80', '[::1]:80',
    '::ffff:1.2.3.4'), or None."""
    t = text.strip()
    if t.startswith("["):
        t = t[1:].split("]", 1)[0]
    elif t.count(":") == 1:
        t = t.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        return None
    return (ip.ipv4_mapped or ip) if ip.version == 6 else ip


def _is_trusted(ip) -> bool:
    return ip is not None and any(ip in net for net in _trusted)


def is_loopback(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def client_key(scope) -> str:
    """Who is asking: the peer address; when the peer is a trusted proxy (`trust_proxies`), the
    right-most X-Forwarded-For hop that is not itself a trusted proxy (what the nearest untrusted
    party was seen as; the hops left of it are whatever the client claimed), the left-most if
    every hop is trusted. A header from anyone else is ignored."""
    if CLIENT in scope:
        return scope[CLIENT]
    client = scope.get("client")
    peer = client[0] if client else "?"
    if not _is_trusted(_ip(peer)):
        return peer
    hops = [h.strip() for k, v in scope.get("headers", []) if k == b"x-forwarded-for"
            for h in v.decode("latin-1").split(",")]
    hops = [h for h in hops if h]
    if not hops:
        return peer
    for hop in reversed(hops):
        ip = _ip(hop)
        if not _is_trusted(ip):
            return str(ip) if ip is not None else hop[:100]
    return str(_ip(hops[0]))


def _hostname(value: str) -> str:
    """'localhost:7860', '[::1]:80', 'A.b' -> 'localhost', '::1', 'a.b'."""
    try:
        return (urlsplit("//" + value.strip()).hostname or "").lower()
    except ValueError:
        return value.strip().lower()


def _local_name(host: str) -> bool:
    h = _hostname(host)
    return h == "localhost" or h.endswith(".localhost") or h == "0.0.0.0" or is_loopback(h)


def _host(value: str) -> str:
    """'https://a.b:7860' or 'a.b:7860' -> 'a.b:7860' (lower case; default ports dropped)."""
    if "://" in value:
        u = urlsplit(value)
        host = (u.hostname or "") + (f":{u.port}" if u.port and u.port not in (80, 443) else "")
    else:
        host = value
        if host.endswith((":80", ":443")):
            host = host.rsplit(":", 1)[0]
    return host.lower()


def _bare(host: str) -> str:
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass
class LoginThrottle:
    free_failures: int = 3
    max_delay: float = 30.0
    failures: "OrderedDict[str, int]" = field(default_factory=OrderedDict)
    locks: dict = field(default_factory=dict)

    def delay(self, key: str) -> float:
        n = self.failures.get(key, 0) - self.free_failures
        return 0.0 if n < 0 else min(self.max_delay, 2.0 ** n)

    def record(self, key: str, ok: bool) -> None:
        if ok:
            self.failures.pop(key, None)
            return
        self.failures[key] = self.failures.get(key, 0) + 1
        self.failures.move_to_end(key)
        while len(self.failures) > 10_000:      # bounded memory under a flood of addresses
            self.failures.popitem(last=False)

    def lock(self, key: str) -> asyncio.Lock:
        if len(self.locks) > 10_000:
            self.locks = {k: v for k, v in self.locks.items() if v.locked()}
        return self.locks.setdefault(key, asyncio.Lock())


class SecurityLayer:
    def __init__(self, app, *, allowed_origins=(), frame_ancestors=(), password: bool = False,
                 max_body_bytes: int = 25_000_000, monitoring: bool = False, gradio_app=None, mcp: bool = False,
                 logins=()):
        self.app = app
        self.gate = McpGate(gradio_app, dict(logins)) if mcp else None     # --mcp: its login and stamps
        self.max_body = max_body_bytes
        self.allowed = {_host(o) for o in allowed_origins}
        self.frame_ancestors = list(frame_ancestors)
        self.password = password
        self.monitoring = monitoring
        self.gradio_app = gradio_app         # Gradio's App: its login cookie's name and its tokens
        self.throttle = LoginThrottle()
        framers = " ".join(["'self'", *self.frame_ancestors])
        csp = f"frame-ancestors {framers}; object-src 'none'; base-uri 'self'"
        self.headers = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", csp.encode()),
                        (b"referrer-policy", b"strict-origin-when-cross-origin")]
        if not self.frame_ancestors:
            self.headers.append((b"x-frame-options", b"SAMEORIGIN"))

    def allow_origin(self, origin: str) -> None:
        """Allow another origin (the share link, known only after launch)."""
        self.allowed.add(_host(origin))

    def same_origin(self, origin: str, scope) -> bool:
        o = _host(origin)
        if o in self.allowed:
            return True
        hosts = [_host(v.decode("latin-1")) for k, v in scope.get("headers", []) if k in (b"host", b"x-forwarded-host")]
        if o in hosts:
            return True
        # this machine under another of its names (http://localhost:7860 calling 127.0.0.1:7860)
        return _bare(o) in LOCAL_HOSTS and any(_bare(h) in LOCAL_HOSTS and h.rsplit(":", 1)[-1] == o.rsplit(":", 1)[-1]
                                               for h in hosts)

    def logged_in(self, scope) -> bool:
        """Whether the request carries a login session of Gradio's (its access-token cookie, as
        gradio.routes' get_current_user reads it, naming a token the app handed out)."""
        return self.user(scope) is not None

    def user(self, scope) -> str | None:
        """The user of the request's login session, if it has one."""
        app = self.gradio_app
        if app is None:
            return None
        raw = "; ".join(v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"cookie")
        cookies = cookie_parser(raw)
        token = (cookies.get(f"access-token-{app.cookie_id}")
                 or cookies.get(f"access-token-unsecure-{app.cookie_id}"))
        return app.tokens.get(token) if token else None

    @staticmethod
    def open_before_login(path: str, method: str) -> bool:
        """What the login page needs: itself, its scripts, styles, fonts and icon, the login."""
        if method == "POST":
            return path == "/login"
        return method in SAFE_METHODS and (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = (scope.get("client") or ("?",))[0]
        key = self._identify(scope)
        if scope["type"] == "websocket":
            if self.password and not self.logged_in(scope):
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        headers = dict((k, v) for k, v in scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin-1")
        foreign = origin == "null" or (bool(origin) and not self.same_origin(origin, scope))
        if foreign and scope["method"] not in SAFE_METHODS:
            log.warning("refused a %s %s from foreign origin %s", scope["method"], scope["path"], origin[:100])
            await self._plain(send, 403, b"cross-origin request refused")
            return
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            await self._plain(send, 413, b"request too large")
            return
        receive = self._bounded(receive)
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"]
        basic = await self._basic_login(scope, path, key)
        before_login = self.password and not self.logged_in(scope)
        if basic is False or (before_login and not self.open_before_login(path, method)):
            await self._plain(send, 401, json.dumps({"detail": "Not authenticated"}).encode(), b"application/json",
                              [(b"www-authenticate", REALM)] if self.gate and is_mcp(path) else [])
            return
        if self.gate and is_mcp(path):   # Gradio's loopback call of the endpoint: this client's, this user's
            self.gate.stamp(scope, key, self.user(scope))
        if path == "/monitoring" or path.startswith("/monitoring/"):
            if not self.monitoring:
                await self._plain(send, 404, b"not found")
                return
            if path == "/monitoring":   # Gradio would log the dashboard's URL and key, built from the caller's Host
                await self._plain(send, 200, b"the monitoring dashboard's URL was written to the server's log at start")
                return
        if path == "/gradio_api/runs" or path.startswith(tuple(p + "/" for p in RUN_HISTORY)):
            hosts = [v.decode("latin-1") for k, v in scope.get("headers", []) if k in (b"host", b"x-forwarded-host")]
            if any(_local_name(h) for h in hosts) and not (is_loopback(key) and is_loopback(peer)):
                log.warning("refused %s %s: Host names this machine, the client %s is elsewhere", method,
                            scope["path"][:100], key)
                await self._plain(send, 403, b"refused: this route is only for a browser on this machine")
                return
        if self.password and path == "/login" and method == "POST":
            await self._login(scope, receive, send, foreign)
            return
        await self.app(scope, receive, self._sender(send, foreign, before_login and method == "GET"))

    def _identify(self, scope) -> str:
        """Who asks (`client_key`, or an MCP call's client from its stamp), kept in the scope, where
        Gradio's own code sees it as request.client too; behind a trusted proxy, the scheme it was
        asked in (uvicorn's part, turned off)."""
        client = scope.get("client")
        peer = client[0] if client else "?"
        stamp = self.gate.unstamp(scope, is_loopback(peer)) if self.gate else None
        key = scope[CLIENT] = stamp.client if stamp else client_key(scope)
        if stamp and stamp.user:
            self.gate.log_in(scope, stamp.user)
        if key != peer:
            scope["client"] = (key, 0)
        if _is_trusted(_ip(peer)):
            proto = dict(scope.get("headers", [])).get(b"x-forwarded-proto", b"").decode("latin-1").strip().lower()
            if proto in ("http", "https"):
                scope["scheme"] = proto.replace("http", "ws") if scope["type"] == "websocket" else proto
        return key

    async def _basic_login(self, scope, path: str, key: str) -> bool | None:
        """With a password, an MCP client's HTTP Basic login (McpGate.basic_user), throttled per client
        as the login form is: True (logged in), False (a wrong one), None (none given)."""
        if not (self.gate and self.password) or self.gate.basic_user(scope, path) is None:
            return None
        async with self.throttle.lock(key):
            wait = self.throttle.delay(key)
            if wait:
                await asyncio.sleep(wait)
            user = self.gate.basic_user(scope, path)
            self.throttle.record(key, bool(user))
        if not user:
            log.warning("failed MCP login from %s (%d in a row)", key, self.throttle.failures.get(key, 0))
            return False
        self.gate.log_in(scope, user)
        return True

    def _bounded(self, receive):
        """`receive`, stopping a body (chunked, or longer than announced) past max_body_bytes."""
        seen = 0

        async def bounded():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    return {"type": "http.disconnect"}
            return message
        return bounded

    def _sender(self, send, foreign: bool, before_login: bool):
        """`send`, adding the headers, dropping CORS grants to a foreign origin, giving bare null
        errors a message and, `before_login`, taking the API description out of an HTML page."""
        body: list[bytes] = []
        start: dict = {}

        async def wrapped(message):
            if message["type"] == "http.response.start":
                hs = [(k, v) for k, v in message.get("headers", [])
                      if not (foreign and k.lower().startswith(b"access-control-"))]
                hs += [h for h in self.headers if h[0] not in {k.lower() for k, _ in hs}]
                message = {**message, "headers": hs}
                html = any(k.lower() == b"content-type" and v.lower().startswith(b"text/html") for k, v in hs)
                if before_login and html:
                    start.update(message)
                    return
            elif message["type"] == "http.response.body" and start:
                body.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                data = API_INFO.sub(b"<script>window.gradio_api_info = {};</script>", b"".join(body))
                hs = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                await send({**start, "headers": hs + [(b"content-length", str(len(data)).encode())]})
                await send({"type": "http.response.body", "body": data})
                return
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if b"null" in chunk and b"error" in chunk:
                    for old, new in NULL_ERRORS:
                        chunk = chunk.replace(old, new % NULL_MESSAGE)
                    message = {**message, "body": chunk}
            await send(message)
        return wrapped

    async def _login(self, scope, receive, send, foreign: bool):
        key = client_key(scope)
        async with self.throttle.lock(key):
            wait = self.throttle.delay(key)
            if wait:
                await asyncio.sleep(wait)
            status = {}

            async def watch(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)
            await self.app(scope, receive, self._sender(watch, foreign, False))
            ok = status.get("code") == 200
            self.throttle.record(key, ok)
            if not ok:
                log.warning("failed login from %s (%d in a row; next attempt waits %.0f s)", key,
                            self.throttle.failures.get(key, 0), self.throttle.delay(key))

    async def _plain(self, send, status: int, text: bytes, kind: bytes = b"text/plain; charset=utf-8", extra=()):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind),
                                (b"content-length", str(len(text)).encode()), *self.headers, *extra]})
        await send({"type": "http.response.body", "body": text})


def clean_cache(folder: Path, max_age_s: float, max_bytes: int) -> tuple[int, int]:
    """Delete files older than `max_age_s`, then the oldest while over `max_bytes`; (files, bytes) removed."""
    files = []
    for p in folder.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                st = p.stat()
                files.append((st.st_mtime, st.st_size, p))
        except OSError:
            continue
    files.sort()
    now, total = time.time(), sum(f[1] for f in files)
    removed = freed = 0
    for mtime, size, p in files:
        if now - mtime <= max_age_s and total <= max_bytes:
            break
        try:
            p.unlink()
        except OSError:
            continue
        total -= size
        removed, freed = removed + 1, freed + size
    return removed, freed


def lifespan(layer_options: dict, cache_dir: Path, max_age_s: float = 86_400, max_bytes: int = 2 * 10 ** 9,
             every_s: float = 600):
    """A FastAPI lifespan for Gradio's `app_kwargs`: wraps the app's middleware stack in
    SecurityLayer before the first request, and runs the cache janitor. The layer is put in
    `layer_options["layer"]` so the caller can allow the share link's origin after launch."""
    @asynccontextmanager
    async def handler(app):
        if app.middleware_stack is None:
            app.middleware_stack = app.build_middleware_stack()
        layer = SecurityLayer(app.middleware_stack, gradio_app=app,
                              **{k: v for k, v in layer_options.items() if k != "layer"})
        app.middleware_stack = layer
        layer_options["layer"] = layer
        if layer.gate is not None:
            install_mcp(app.get_blocks(), layer.gate, layer.password)

        async def janitor():
            while True:
                n, b = await asyncio.to_thread(clean_cache, cache_dir, max_age_s, max_bytes)
                if n:
                    log.info("cache: removed %d files, %.1f MB", n, b / 1e6)
                await asyncio.sleep(every_s)
        task = asyncio.create_task(janitor()) if cache_dir.is_dir() else None
        try:
            yield
        finally:
            if task:
                task.cancel()
    return handler

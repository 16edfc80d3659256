"""The tasks as MCP tools (`--mcp`): Gradio's MCP server (`mcp_server=True`, gradio pinned in
requirements.txt) on the public API endpoints of tabs/api.py, behind the gates of the HTTP API.

Gradio serves MCP at /gradio_api/mcp/ (streamable HTTP; SSE at /gradio_api/mcp/sse) and runs a tool
call as a call of the API endpoint through its own `gradio_client` on this server's local URL,
forwarding the MCP request's headers. That loopback call passes the queue, the endpoint's
`validator`, the per-client reservation and the compute budget like any API call; what this
module adds makes it count as the MCP client's own:

- `McpGate.stamp` puts on every MCP request a header naming its client address and user, signed
  with a secret of this process; `McpGate.unstamp` believes it only from loopback with that secret
  (and strips it from every request), so the loopback call is the MCP client's for the per-client
  quota, and its user's (a Gradio login token for that user) for the owners of its results.
- With `--auth`, an MCP client logs in with HTTP Basic (`Authorization: Basic base64(user:password)`,
  one of the --auth logins) or a Gradio login cookie; `McpGate.basic_user` reads the former (on the
  MCP routes and the result files' route only). SecurityLayer refuses without one (401).
- `install` (at start-up) gives Gradio's MCP server its loopback client, logged in as an internal
  user for the routes that are not events (config, heartbeat, the event stream), and returns each
  image as the PNG itself (base64, its parameters' text chunk kept) with its URL, the info JSON as text.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import mimetypes
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

STAMP = b"x-ldm-mcp"
MCP_PATH = "/gradio_api/mcp"
FILES_PATH = "/gradio_api/file="
INTERNAL_USER = "ldm-mcp-loopback"      # the loopback client's own login (config, heartbeat, event stream)
REALM = b'Basic realm="Latent Diffusion Studio", charset="UTF-8"'


def is_mcp(path: str) -> bool:
    return path == MCP_PATH or path.startswith(MCP_PATH + "/")


@dataclass(frozen=True)
class Stamp:
    client: str           # the MCP client's address (security.client_key of its request)
    user: str             # its login ("" without --auth)


@dataclass
class McpGate:
    gradio_app: object                          # Gradio's App: its login tokens and cookie name
    logins: dict[str, str] = field(default_factory=dict)      # --auth user -> password
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    tokens: dict[str, str] = field(default_factory=dict)      # user -> the Gradio login token made for them

    def basic_user(self, scope, path: str) -> str | None | bool:
        """On the MCP routes and the files route: the user an `Authorization: Basic` header logs in
        (None: no such header, or another route; False: a login that is not one of --auth's)."""
        if not (is_mcp(path) or path.startswith(FILES_PATH)):
            return None
        value = dict(scope.get("headers", [])).get(b"authorization", b"")
        kind, _, encoded = value.partition(b" ")
        if kind.lower() != b"basic":
            return None
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        known = self.logins.get(user)
        ok = bool(sep) and known is not None and hmac.compare_digest(password.encode(), known.encode())
        return user if ok else False

    def token(self, user: str) -> str:
        """A Gradio login token for `user` (one per user, made once)."""
        if user not in self.tokens:
            self.tokens[user] = secrets.token_urlsafe(32)
            self.gradio_app.tokens[self.tokens[user]] = user
        return self.tokens[user]

    def cookies(self, user: str) -> dict[str, str]:
        """The login cookies Gradio reads (`get_current_user`), for `user`."""
        cid, tok = self.gradio_app.cookie_id, self.token(user)
        return {f"access-token-{cid}": tok, f"access-token-unsecure-{cid}": tok}

    def log_in(self, scope, user: str) -> None:
        """Make the request `user`'s: their login cookies after any it carries (the last one counts)."""
        headers = scope.get("headers", [])
        old = b"; ".join(v for k, v in headers if k == b"cookie")
        mine = "; ".join(f"{k}={v}" for k, v in self.cookies(user).items()).encode()
        scope["headers"] = [(k, v) for k, v in headers if k != b"cookie"] + [(b"cookie", old + b"; " + mine
                                                                              if old else mine)]

    def stamp(self, scope, client: str, user: str | None) -> None:
        value = json.dumps([self.secret, client, user or ""]).encode()      # (ASCII: json escapes the rest)
        scope["headers"] = [(k, v) for k, v in scope.get("headers", []) if k != STAMP] + [(STAMP, value)]

    def unstamp(self, scope, loopback: bool) -> Stamp | None:
        """Take the stamp off a request; a valid one from this machine (`loopback` peer) is returned."""
        headers = scope.get("headers", [])
        values = [v for k, v in headers if k == STAMP]
        if not values:
            return None
        scope["headers"] = [(k, v) for k, v in headers if k != STAMP]
        try:
            secret, client, user = json.loads(values[-1])
        except (ValueError, TypeError):
            return None
        if len(values) != 1 or not loopback or not hmac.compare_digest(str(secret).encode(), self.secret.encode()):
            return None
        return Stamp(str(client), str(user))


def install(blocks, gate: McpGate, password: bool) -> None:
    """At start-up, with `mcp_server=True` (SecurityLayer's lifespan): Gradio's MCP server gets its
    loopback client (with a password, logged in as INTERNAL_USER), made at its first tool call, and
    returns images as files, not as their repr."""
    server = blocks.mcp_server_obj
    if server is None:          # Gradio could not start it: it says why (blocks.mcp_error), webui stops
        return
    lock = threading.Lock()

    def loopback_client():
        from gradio_client import Client   # lazy: only with --mcp, once the server answers

        with lock:
            if server._client_instance is None:
                cookies = gate.cookies(INTERNAL_USER) if password else {}
                server._client_instance = Client(
                    server.local_url, download_files=False, verbose=False, analytics_enabled=False, ssl_verify=False,
                    _skip_components=False, headers={"x-gradio-user": "mcp"}, httpx_kwargs={"cookies": cookies})
            return server._client_instance
    server._get_or_create_client = loopback_client
    server.postprocess_output_data = lambda data, root_url: tool_content(server.types, data, root_url)
    for name in ("_execute_tool_without_progress", "_execute_tool_with_progress"):
        setattr(server, name, _saying_refusals(getattr(server, name)))


def _saying_refusals(execute):
    """A tool call refused when it joins the queue (the per-client quota, a full queue) fails with the
    studio's message, which Gradio's client drops (it raises on the HTTP status alone)."""
    import httpx      # lazy: with gradio_client

    async def run(*args, **kwargs):
        try:
            return await execute(*args, **kwargs)
        except httpx.HTTPStatusError as e:
            try:
                detail = e.response.json().get("detail")
            except (ValueError, AttributeError, httpx.ResponseNotRead):
                detail = None
            raise RuntimeError(detail if isinstance(detail, str) and detail else str(e)) from None
    return run


def _flat(data) -> list:
    """An endpoint's outputs as a flat list: a gallery's items' images, a tuple's items."""
    if isinstance(data, (list, tuple)):
        return [x for item in data for x in _flat(item)]
    if isinstance(data, dict) and "image" in data and isinstance(data["image"], dict):
        return [data["image"]]           # a gallery item: {"image": file, "caption": ...}
    return [data]


def tool_content(types, data, root_url: str) -> list:
    """A tool's result: each image as itself (base64 of the PNG) and its URL on this server, each
    other output (the info JSON) as text."""
    out = []
    for item in _flat(data):
        if isinstance(item, dict) and item.get("path"):
            path = Path(item["path"])
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            local = str(item.get("url") or "")
            url = (root_url.rstrip("/") + FILES_PATH + local.split(FILES_PATH, 1)[1]) if FILES_PATH in local \
                else local or str(path)
            if kind.startswith("image/") and path.is_file():
                out.append(types.ImageContent(type="image", data=base64.b64encode(path.read_bytes()).decode(),
                                              mimeType=kind))
            out.append(types.TextContent(type="text", text=f"Image URL: {url}"))
        elif item is not None:
            out.append(types.TextContent(type="text", text=str(item)))
    return out

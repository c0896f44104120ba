"""Plain HTTP on the WebSocket port: the overlay and viewer pages, their assets, the stream list and
caption downloads.

The websockets server hands every opening request to ``HttpSite.process_request`` (its
``process_request`` hook). A request that asks for a WebSocket upgrade goes on to the handshake
whatever its path; any other GET is answered here:

=============================================  ================================================
``/``                                          the viewer page (clients/overlay/viewer.html)
``/overlay``                                   the OBS overlay (clients/overlay/overlay.html)
``/publish``                                   publish from the browser's microphone (publish.html)
``/static/<name>``                             the pages' scripts, styles and icon
``/streams``                                   JSON: live and remembered streams and their tracks
``/captions/<stream>/<track>.vtt|.srt|.json``  a track's finals as WebVTT, SRT or JSON
``/healthz``                                   JSON ``{"status": ...}``: 200 when serving, 503 otherwise
``/metrics``                                   Prometheus text exposition (stream/metrics.py)
=============================================  ================================================

With a token table (``auth``), the data endpoints need a token given as ``Authorization: Bearer`` or
``?token=``: ``/streams`` a subscribe token (it lists only the streams that token may read),
``/captions/...`` a subscribe token for that stream, ``/metrics`` an admin token. A missing or unknown
token gets 401, a token without the right gets 403. The pages, their assets and ``/healthz`` are
public: they carry no captions (the pages read the token from their own URL).

The stream list and the captions are read from the hub and the finals it keeps (its ``FinalLog``, the
same store a WebSocket ``resume`` reads) by stream/captions_view.py.

Routing is sans-I/O: ``HttpSite.route(path, headers)`` returns an ``HttpReply`` (or ``None`` for an
upgrade) and ``to_response`` turns it into a websockets ``Response``. The assets are read once, at
start-up, from the ``clients`` package data, so a path never reaches the file system. Pages get a
Content-Security-Policy that allows only this origin's scripts, styles and WebSocket; assets are
revalidated (``ETag``), data is never cached. docs/overlay.md describes the pages.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from stream.auth import Permission, TokenRule, TokenTable, token_from_headers
from stream.captions_view import FORMATS, render, stream_list
from stream.errors import ErrorCode, ProtocolError
from stream.hub import StreamHub
from stream.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from stream.metrics import ServerMetrics

ASSET_PACKAGE: Final = "clients"
ASSET_DIR: Final = "overlay"
CONTENT_TYPES: Final[Mapping[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CAPTION_TYPES: Final[Mapping[str, str]] = {
    "vtt": "text/vtt; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "json": "application/json",
}
PAGES: Final[Mapping[str, str]] = {
    "/": "viewer.html",
    "/overlay": "overlay.html",
    "/overlay/": "overlay.html",
    "/publish": "publish.html",
}
_ASSET_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]*\.(?:js|css|svg)")
_CAPTIONS_PATH: Final = re.compile(
    r"/captions/(?P<stream>[A-Za-z0-9_.:-]{1,128})/(?P<track>[A-Za-z0-9_-]{1,32})\.(?P<fmt>\w+)"
)

_PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'"
)
VIEWER_CSP: Final = f"{_PAGE_CSP}; frame-ancestors 'self'"
OVERLAY_CSP: Final = _PAGE_CSP  # the overlay may be framed: OBS docks and stream tools embed it
DATA_CSP: Final = "default-src 'none'; frame-ancestors 'none'; sandbox"
NO_STORE: Final = "no-store"
REVALIDATE: Final = "no-cache"  # cache, but ask (If-None-Match) every time: a new version shows at once


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of ``clients/overlay`` by name, with its content type and a strong ETag."""
    assets: dict[str, Asset] = {}
    folder = resources.files(ASSET_PACKAGE).joinpath(ASSET_DIR)
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            body = entry.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:20]
            assets[entry.name] = Asset(body, CONTENT_TYPES[suffix], f'"{digest}"')
    if not set(PAGES.values()) <= set(assets):
        raise FileNotFoundError(f"the overlay pages are missing from the {ASSET_PACKAGE} package data")
    return assets


def text_reply(status: HTTPStatus, text: str) -> HttpReply:
    return HttpReply(
        status,
        f"{text}\n".encode(),
        "text/plain; charset=utf-8",
        (("Cache-Control", NO_STORE), ("Content-Security-Policy", DATA_CSP)),
    )


def is_upgrade(headers: Mapping[str, str]) -> bool:
    return "websocket" in headers.get("upgrade", "").lower()


class HttpSite:
    """See the module docstring."""

    def __init__(
        self,
        hub: StreamHub,
        assets: Mapping[str, Asset] | None = None,
        *,
        auth: TokenTable | None = None,
        metrics: ServerMetrics | None = None,
        health: Callable[[], tuple[bool, dict[str, object]]] | None = None,
    ) -> None:
        self.hub = hub
        self.assets = dict(assets) if assets is not None else load_assets()
        self.auth = auth
        self.metrics = metrics
        self.health = health

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The websockets ``process_request`` hook."""
        headers = {key.lower(): value for key, value in request.headers.raw_items()}
        reply = self.route(request.path, headers)
        return None if reply is None else to_response(reply)

    def route(self, target: str, headers: Mapping[str, str]) -> HttpReply | None:
        """Answer a GET of ``target`` (path and query); ``headers`` with lower-case names. ``None``: a
        WebSocket upgrade, for the handshake to carry on."""
        if is_upgrade(headers):
            return None
        parts = urlsplit(target)
        path = parts.path
        if path in PAGES:
            csp = OVERLAY_CSP if PAGES[path] == "overlay.html" else VIEWER_CSP
            return self._asset(PAGES[path], headers, csp)
        if path.startswith("/static/"):
            name = path.removeprefix("/static/")
            if _ASSET_NAME.fullmatch(name) and name in self.assets:
                return self._asset(name, headers, DATA_CSP)
            return text_reply(HTTPStatus.NOT_FOUND, "no such file")
        query = parse_qs(parts.query)
        if path == "/healthz":
            ready, document = self.health() if self.health is not None else (True, {"status": "ok"})
            return self._json(document, HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE)
        if path == "/metrics":
            if self.metrics is None:
                return text_reply(HTTPStatus.NOT_FOUND, "no metrics on this server")
            refused, _ = self._authorize(headers, query, Permission.ADMIN, None)
            if refused is not None:
                return refused
            return HttpReply(
                HTTPStatus.OK, self.metrics.render(), METRICS_CONTENT_TYPE, (("Cache-Control", NO_STORE),)
            )
        if path == "/streams":
            refused, rule = self._authorize(headers, query, Permission.SUBSCRIBE, None)
            if refused is not None:
                return refused
            rows = [
                row.to_json()
                for row in stream_list(self.hub)
                if rule is None or rule.allows(Permission.SUBSCRIBE, row.stream)
            ]
            return self._json({"streams": rows})
        match = _CAPTIONS_PATH.fullmatch(unquote(path))
        if match is not None:
            refused, _ = self._authorize(headers, query, Permission.SUBSCRIBE, match["stream"])
            if refused is not None:
                return refused
            return self._captions(match["stream"], match["track"], match["fmt"], query)
        return text_reply(HTTPStatus.NOT_FOUND, "not found: try / (viewer), /overlay, /publish, /streams")

    def _asset(self, name: str, headers: Mapping[str, str], csp: str) -> HttpReply:
        asset = self.assets[name]
        extra = (
            ("Cache-Control", REVALIDATE),
            ("ETag", asset.etag),
            ("Content-Security-Policy", csp),
            ("Referrer-Policy", "no-referrer"),
        )
        if asset.etag in (tag.strip() for tag in headers.get("if-none-match", "").split(",")):
            return HttpReply(HTTPStatus.NOT_MODIFIED, b"", asset.content_type, extra)
        return HttpReply(HTTPStatus.OK, asset.body, asset.content_type, extra)

    def _authorize(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, list[str]],
        permission: Permission,
        stream: str | None,
    ) -> tuple[HttpReply | None, TokenRule | None]:
        """``(None, rule)`` when the request's token grants ``permission`` (``rule`` is ``None`` when
        authentication is off), else ``(401/403 reply, None)``."""
        if self.auth is None:
            return None, None
        token = token_from_headers(headers) or next(iter(query.get("token", [])), "")
        try:
            return None, self.auth.authorize(token, permission, stream)
        except ProtocolError as error:
            if self.metrics is not None:
                self.metrics.auth_failures.labels(error.code).inc()
            if error.code == ErrorCode.UNAUTHORIZED:
                reply = text_reply(HTTPStatus.UNAUTHORIZED, f"{error.code}: {error.message}")
                headers_out = (*reply.headers, ("WWW-Authenticate", 'Bearer realm="livecanvas"'))
                return HttpReply(reply.status, reply.body, reply.content_type, headers_out), None
            return text_reply(HTTPStatus.FORBIDDEN, f"{error.code}: {error.message}"), None

    def _json(self, document: object, status: HTTPStatus = HTTPStatus.OK) -> HttpReply:
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        return HttpReply(
            status,
            body,
            "application/json",
            (("Cache-Control", NO_STORE), ("Content-Security-Policy", DATA_CSP)),
        )

    def _captions(self, stream: str, track: str, fmt: str, query: Mapping[str, list[str]]) -> HttpReply:
        if fmt not in FORMATS:
            return text_reply(HTTPStatus.NOT_FOUND, f"captions come as {', '.join(FORMATS)}")
        text = render(self.hub, stream, track, next(f for f in FORMATS if f == fmt))
        if text is None:
            return text_reply(HTTPStatus.NOT_FOUND, f"no stream {stream!r} on this server")
        extra = [("Cache-Control", NO_STORE), ("Content-Security-Policy", DATA_CSP)]
        if fmt != "json":
            disposition = "attachment" if query.get("download") else "inline"
            extra.append(("Content-Disposition", f'{disposition}; filename="{stream}-{track}.{fmt}"'))
        return HttpReply(HTTPStatus.OK, text.encode(), CAPTION_TYPES[fmt], tuple(extra))


def to_response(reply: HttpReply) -> Response:
    """The websockets ``Response`` for ``reply``: the connection closes after it (HTTP/1.1 ``close``)."""
    status = HTTPStatus(reply.status)
    headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close")])
    if status is not HTTPStatus.NOT_MODIFIED:  # a 304 has no body, and no length of its own
        headers["Content-Type"] = reply.content_type
        headers["Content-Length"] = str(len(reply.body))
    headers["X-Content-Type-Options"] = "nosniff"
    for name, value in reply.headers:
        headers[name] = value
    return Response(status.value, status.phrase, headers, reply.body)

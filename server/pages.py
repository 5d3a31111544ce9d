"""The shop's H5 homepage and the JavaScript client, served as plain files.

No build step: `server/static/` holds the HTML, CSS and ES modules as they are sent. They
are read once when the application is made, gzipped once, and answered from memory with
an ETag. The homepage is revalidated on every visit (`no-cache`: a deploy shows at once);
the assets it names carry their content hash as `?v=`, so a phone keeps them for a year
and a new version is a new URL. The homepage's import map points `fission.js` at its
versioned URL too, and its Content-Security-Policy allows that one inline script by hash.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from server.errors import ApiError

STATIC = Path(__file__).resolve().parent / "static"
INDEX = "index.html"
CLIENT = "fission.js"
TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript",
         ".svg": "image/svg+xml", ".webmanifest": "application/manifest+json"}
YEAR = 365 * 24 * 3600
_PLACEHOLDER = re.compile(r"\{\{asset:([A-Za-z0-9_.-]+)\}\}")
_IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.S)
_ASSET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\.[a-z]{2,12}")


@dataclass(frozen=True)
class Asset:
    """One file as it is answered: its bytes, gzipped bytes, type and validators."""

    name: str
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str
    version: str  # the content hash a versioned URL carries (`?v=`)


def _asset(name: str, body: bytes) -> Asset:
    digest = hashlib.sha256(body).hexdigest()
    suffix = Path(name).suffix
    # mtime=0: the same bytes give the same gzip, whichever process made it.
    return Asset(name, body, gzip.compress(body, 9, mtime=0),
                 TYPES.get(suffix, "application/octet-stream"), f'"{digest[:20]}"',
                 digest[:12])


class Pages:
    """The homepage and its assets, loaded from `root` (the package's `static/`)."""

    def __init__(self, root: Path = STATIC) -> None:
        assets = {}
        for path in sorted(root.iterdir()):
            if path.is_file() and path.name != INDEX and _ASSET_NAME.fullmatch(path.name) \
                    and path.suffix in TYPES:
                assets[path.name] = _asset(path.name, path.read_bytes())
        self.assets = assets
        html = (root / INDEX).read_text(encoding="utf-8")

        def versioned(match: re.Match[str]) -> str:
            found = assets.get(match[1])
            if found is None:  # a typo in index.html fails at start, not on a phone
                raise ValueError(f"{INDEX} names {match[1]!r}, which is not in {root}")
            return f"/static/{found.name}?v={found.version}"

        html = _PLACEHOLDER.sub(versioned, html)
        self.index = _asset(INDEX, html.encode("utf-8"))
        inline = _IMPORT_MAP.search(html)
        script_hashes = ""
        if inline is not None:
            json.loads(inline[1])  # a broken import map fails here, not in the browser
            digest = base64.b64encode(hashlib.sha256(inline[1].encode()).digest()).decode()
            script_hashes = f" 'sha256-{digest}'"
        # 'self' admits the page's own origin for ws:/wss: too (CSP level 3).
        self.policy = ("default-src 'self'; script-src 'self'" + script_hashes
                       + "; style-src 'self'; img-src 'self' data:; connect-src 'self';"
                       " base-uri 'none'; form-action 'self'; frame-ancestors 'self'")

    def answer(self, request: web.Request, asset: Asset, cache: str) -> web.Response:
        """`asset` for `request`: 304 when the client holds it, gzipped when accepted."""
        headers = {"ETag": asset.etag, "Cache-Control": cache, "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff"}
        if asset.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        body = asset.body
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        charset = "utf-8" if asset.content_type.startswith("text/") else None
        return web.Response(body=body, headers=headers, content_type=asset.content_type,
                            charset=charset)

    async def home(self, request: web.Request) -> web.Response:
        """`GET /`: the homepage (any query string is a share link's, and ignored here)."""
        response = self.answer(request, self.index, "no-cache")
        response.headers["Content-Security-Policy"] = self.policy
        # The token travels in the URL's fragment, which no request carries; this keeps
        # the page's address out of the requests it makes all the same.
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def client(self, request: web.Request) -> web.Response:
        """`GET /fission.js`: the client module, for any page or mini-program to load."""
        response = self.answer(request, self.assets[CLIENT], "no-cache")
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    async def static(self, request: web.Request) -> web.Response:
        """`GET /static/{asset}`: a file of the homepage; kept a year when versioned."""
        asset = self.assets.get(request.match_info["asset"])
        if asset is None:
            raise ApiError("not_found", "no such file")
        current = request.query.get("v") == asset.version
        # An old page asking for an older version gets today's file, revalidated: better
        # than a 404 on a phone that kept yesterday's HTML.
        return self.answer(request, asset,
                           f"public, max-age={YEAR}, immutable" if current else "no-cache")


def routes(app: web.Application, pages: Pages | None = None) -> None:
    """Register `GET /`, `GET /fission.js` and `GET /static/{asset}`."""
    pages = pages or Pages()
    app.router.add_get("/", pages.home)
    app.router.add_get("/fission.js", pages.client)
    app.router.add_get("/static/{asset}", pages.static)

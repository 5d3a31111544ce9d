"""The homepage's files as server/pages.py answers them: versions, caching, gzip, CSP."""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server import http_api, pages, state

if TYPE_CHECKING:
    from server.app import Server

INDEX = """<!doctype html><link rel="stylesheet" href="{{asset:a.css}}">
<script type="importmap">{"imports": {"/static/m.js": "{{asset:m.js}}"}}</script>"""


def _site(tmp: Path, index: str = INDEX) -> Path:
    (tmp / "index.html").write_text(index, encoding="utf-8")
    (tmp / "a.css").write_text("body { color: red }", encoding="utf-8")
    (tmp / "m.js").write_text("export const x = 1;", encoding="utf-8")
    (tmp / "notes.txt").write_text("not served", encoding="utf-8")
    return tmp


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    pages.routes(app, pages.Pages(_site(tmp_path)))
    async with TestClient(TestServer(app)) as found:
        yield found


def _version(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:12]


async def test_the_homepage_names_its_assets_by_content_hash(
        client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/")
    assert response.status == 200 and response.content_type == "text/html"
    html = await response.text()
    assert f'href="/static/a.css?v={_version(b"body { color: red }")}"' in html
    assert f'"/static/m.js?v={_version(b"export const x = 1;")}"' in html
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    # The one inline script, the import map, is allowed by its hash and nothing else is.
    inline = re.search(r'<script type="importmap">(.*?)</script>', html, re.S)
    assert inline is not None
    digest = base64.b64encode(hashlib.sha256(inline[1].encode()).digest()).decode()
    policy = response.headers["Content-Security-Policy"]
    assert f"script-src 'self' 'sha256-{digest}';" in policy
    assert "unsafe-inline" not in policy


async def test_a_current_version_is_kept_a_year_and_any_other_revalidated(
        client: TestClient[web.Request, web.Application]) -> None:
    current = _version(b"body { color: red }")
    kept = await client.get(f"/static/a.css?v={current}")
    assert kept.status == 200 and kept.content_type == "text/css"
    assert kept.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert await kept.text() == "body { color: red }"
    for path in ("/static/a.css", "/static/a.css?v=old"):
        fresh = await client.get(path)
        assert fresh.status == 200 and fresh.headers["Cache-Control"] == "no-cache", path


async def test_etag_answers_304_and_gzip_is_sent_when_accepted(
        client: TestClient[web.Request, web.Application]) -> None:
    first = await client.get("/static/m.js", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in first.headers
    assert first.content_type == "text/javascript"
    again = await client.get("/static/m.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304 and await again.read() == b""
    zipped = await client.get("/static/m.js", headers={"Accept-Encoding": "gzip"},
                              auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await zipped.read()) == b"export const x = 1;"


async def test_files_not_listed_are_not_served(tmp_path: Path) -> None:
    app = web.Application(middlewares=[http_api.errors_and_logs])
    app[state.SERVER] = cast("Server", _NoMetrics())  # a stand-in: only its metrics are read
    pages.routes(app, pages.Pages(_site(tmp_path)))
    async with TestClient(TestServer(app)) as client:
        for path in ("/static/notes.txt", "/static/index.html", "/static/nope.js",
                     "/static/..%2Fpages.py"):
            response = await client.get(path)
            assert response.status == 404, path
            assert (await response.json())["error"]["code"] == "not_found", path


def test_a_missing_asset_named_by_the_page_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"gone\.js"):
        pages.Pages(_site(tmp_path, INDEX + '<script src="{{asset:gone.js}}"></script>'))


def test_the_shipped_homepage_loads() -> None:
    """server/static/ as packaged: every asset the page names exists, the client too."""
    found = pages.Pages()
    assert {"fission.js", "home.js", "home.css"} <= set(found.assets)
    html = found.index.body.decode()
    for name in ("fission.js", "home.js", "home.css"):
        assert f"/static/{name}?v={found.assets[name].version}" in html


class _NoMetrics:
    """What the error middleware reads of the server: metrics that count nothing."""

    class metrics:  # an attribute namespace, as `server.metrics` is
        @staticmethod
        def request(method: str, route: str, status: int) -> None:
            return None

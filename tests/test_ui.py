"""The browser page at ``GET /`` without a browser: served as HTML with a strict CSP, open without
the API key, off with ``--no-ui`` (issue 13, item 6). ``tests/test_ui_browser.py`` drives it in
Chromium."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html.parser
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from server_fakes import FakeReranker

from qwen3_rerank.server.app import create_app
from qwen3_rerank.server.settings import ServerSettings


@asynccontextmanager
async def client_for(**settings: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ServerSettings(max_batch_wait=0.0, **settings), FakeReranker())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield client


def get(path: str, **settings: object) -> httpx.Response:
    async def fetch() -> httpx.Response:
        async with client_for(**settings) as client:
            return await client.get(path)

    return asyncio.run(asyncio.wait_for(fetch(), 30))


class InlineBlocks(html.parser.HTMLParser):
    """The page's inline script and style texts, and every URL-bearing attribute (parsed, not regex)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.blocks: dict[str, list[str]] = {"script": [], "style": []}
        self.urls: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.blocks:
            self._open = tag
            self.blocks[tag].append("")
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "action")]

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.blocks[self._open][-1] += data


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def directives(policy: str) -> dict[str, list[str]]:
    out = {}
    for part in policy.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_the_page_is_html_with_a_csp_that_allows_only_its_own_inline_code():
    response = get("/", api_keys=("secret",))  # no key sent: the page is open, the API is not
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert "<textarea" in page and "v2/rerank" in page
    assert "secret" not in page

    parsed = InlineBlocks()
    parsed.feed(page)
    assert len(parsed.blocks["script"]) == 1 and len(parsed.blocks["style"]) == 1
    assert all(url.startswith("data:") for url in parsed.urls), parsed.urls  # nothing fetched from anywhere

    policy = directives(response.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == [sha256_source(parsed.blocks["script"][0])]
    assert policy["style-src"] == [sha256_source(parsed.blocks["style"][0])]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert not any("unsafe" in v or "http" in v or v == "*" for values in policy.values() for v in values)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_api_still_wants_the_key():
    async def scenario() -> None:
        async with client_for(api_keys=("secret",)) as client:
            assert (await client.get("/")).status_code == 200
            assert (await client.get("/v1/models")).status_code == 401
            refused = await client.post("/v2/rerank", json={"query": "q", "documents": ["a"]})
            assert refused.status_code == 401

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_no_ui_means_404_at_the_root():
    response = get("/", ui=False)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert "content-security-policy" not in response.headers


def test_the_page_is_not_in_the_openapi_schema():
    assert "/" not in get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("argv", "environ", "ui"),
    [
        ([], {}, True),
        (["--no-ui"], {}, False),
        ([], {"QWEN3_RERANK_NO_UI": "1"}, False),
        ([], {"QWEN3_RERANK_NO_UI": "off"}, True),
        (["--no-ui"], {"QWEN3_RERANK_NO_UI": "0"}, False),
    ],
)
def test_no_ui_flag_and_environment(argv, environ, ui):
    from qwen3_rerank.cli import build_parser
    from qwen3_rerank.cli.serve import resolve

    settings, _ = resolve(build_parser().parse_args(["serve", *argv]), environ)
    assert settings.ui is ui


def test_a_no_ui_environment_value_that_is_neither_yes_nor_no_is_a_usage_error():
    from qwen3_rerank.cli import build_parser
    from qwen3_rerank.cli.options import UsageError
    from qwen3_rerank.cli.serve import resolve

    with pytest.raises(UsageError, match="QWEN3_RERANK_NO_UI"):
        resolve(build_parser().parse_args(["serve"]), {"QWEN3_RERANK_NO_UI": "maybe"})

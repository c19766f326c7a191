"""The browser page at ``GET /``: one static HTML file to try the model by hand.

The page (``static/index.html``, package data) has its CSS and JavaScript inline and no external
resource at all, so there is nothing to build and nothing for a browser to fetch elsewhere. It
calls the server's own ``/v2/rerank`` and ``/v1/models`` with the user's API key when the server
wants one; the page itself needs no key, since it holds nothing but its own code.

The Content-Security-Policy allows exactly the page's one inline script and one inline style
block (by their SHA-256, computed here from the shipped file, so an edit to the page cannot
forget to update the policy), requests to this origin only, and nothing else: no other origin,
no framing, no form posts, no plugins. ``--no-ui`` leaves this router out, and ``GET /`` is a
404 again.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

PAGE = "index.html"

router = APIRouter()


def inline_hashes(html: str, tag: str) -> list[str]:
    """CSP source expressions (``'sha256-...'``) of every inline ``<tag>`` block of ``html``.

    A browser hashes the exact text between the opening and closing tag, encoded as UTF-8.

    Args:
        html: the page.
        tag: ``script`` or ``style``.

    Returns:
        One ``'sha256-<base64>'`` per block without attributes, in page order.
    """
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode('utf-8')).digest()).decode('ascii')}'" for b in blocks]


def content_security_policy(html: str) -> str:
    """The policy for ``html``: its own inline script and style, and requests to this origin only."""
    scripts = " ".join(inline_hashes(html, "script")) or "'none'"
    styles = " ".join(inline_hashes(html, "style")) or "'none'"
    return (
        "default-src 'none'; "
        f"script-src {scripts}; "
        f"style-src {styles}; "
        "connect-src 'self'; "
        "img-src data:; "
        "base-uri 'none'; "
        "form-action 'none'; "
        "frame-ancestors 'none'"
    )


@functools.cache
def page() -> tuple[bytes, dict[str, str]]:
    """The page's bytes and the headers it is served with (read once, from the package)."""
    html = (resources.files("qwen3_rerank.server") / "static" / PAGE).read_text(encoding="utf-8")
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }
    return html.encode("utf-8"), headers


@router.get("/", include_in_schema=False, response_class=Response)
async def index() -> Response:
    """The page; open to anyone who can reach the server (the API calls it makes need the key)."""
    body, headers = page()
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)

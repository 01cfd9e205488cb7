"""The web UI at ``/ui``: static files shipped in the package (``corral/ui``: HTML, ES modules, CSS;
no build step, nothing fetched from the internet), served with a Content-Security-Policy that allows
only this origin (no inline script, no remote origin). Only files that exist under that folder are
served; a name that leaves it is a 404."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

router = APIRouter()

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}


def ui_root() -> Path:
    return Path(str(resources.files("corral") / "ui"))


def asset(name: str) -> Path | None:
    """The file ``name`` names under the UI folder, or None (absent, hidden, or outside it)."""
    root = ui_root().resolve()
    if not name or any(part.startswith(".") or part == "" for part in name.split("/")):
        return None
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file() or path.suffix not in TYPES:
        return None
    return path


@router.get("/ui", include_in_schema=False)
async def ui_redirect() -> Response:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/ui/{name:path}", include_in_schema=False)
async def ui_file(name: str) -> Response:
    path = asset(name or "index.html")
    if path is None:
        return Response("not found", status_code=404, media_type="text/plain", headers=HEADERS)
    return Response(path.read_bytes(), media_type=TYPES[path.suffix], headers=HEADERS)

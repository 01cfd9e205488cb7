"""A real browser for the web UI's tests: Playwright for Python driving Debian's chromium (headless,
no sandbox, no GPU; no browser is downloaded; ``microphone``: chromium's fake capture device, a
tone). Every console error, page error and dialog is recorded, so a test can assert there were
none; screenshots go to test-artifacts/ui/."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import need_program

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"


@dataclass
class Watched:
    page: Any
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def browser(width: int = 1280, height: int = 800, *, microphone: bool = False) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = need_program("chromium")
    with sync_playwright() as p:
        fake = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"] if microphone else []
        launched = p.chromium.launch(executable_path=chromium,
                                     args=["--headless", "--no-sandbox", "--disable-gpu", *fake])
        try:
            yield launched.new_context(viewport={"width": width, "height": height})
        finally:
            launched.close()


def watch(page: Any) -> Watched:
    watched = Watched(page)
    page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watched.errors.append(str(e)))
    page.on("dialog", lambda d: (watched.dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: watched.requests.append(r.url))
    return watched

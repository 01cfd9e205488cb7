"""What the browser tests share: one browser context per module, against that module's ``srv``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.ui.browser import browser


@pytest.fixture(scope="module")
def context(srv: Any) -> Iterator[Any]:
    with browser() as ctx:
        yield ctx

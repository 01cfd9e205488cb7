"""The catalogue's row 12 (issue 18), the part the sidecar's own tests (tests/sidecar/test_protocol.py,
test_sidecar_fake.py: bad JSON, over-long lines, missing ids, a backend writing to fd 1, a dead
parent) leave out: input that ends in the middle of a line. Every bad line gets one error, every
stdout line is one JSON object, and the process exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)


def test_input_ending_mid_line(tmp_path: Path) -> None:
    lines = (b'{"jsonrpc": "2.0", "id": 1, "method": "models/list", "params": {}}\n'
             b"not json at all\n"
             b'{"jsonrpc": "2.0", "method": "no/such/method"}\n'
             b"[1, 2, 3]\n"
             b'{"jsonrpc": "2.0", "id": 7, "meth')  # the input ends here, mid-line
    env = {**os.environ, "CORRAL_HOME": str(tmp_path / "home"), "CORRAL_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run([sys.executable, "-m", "corral", "sidecar"], input=lines, capture_output=True, env=env,
                          timeout=100)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]  # every line parses
    errors = [a for a in answers if "error" in a and a.get("id") is None]
    assert len(errors) == 3  # not JSON, not an object, the cut line: one error each (a notification gets none)
    assert all(e["error"]["code"] in (-32700, -32600) for e in errors)
    assert any("not JSON" in e["error"]["message"] for e in errors[-1:])  # the cut line, reported
    assert [a["id"] for a in answers if a.get("id") is not None] == [1]  # the request answered (or cancelled)

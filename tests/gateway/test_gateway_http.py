"""The gateway through a real `corral serve`, hit by the official openai SDK: remote models answer
like local ones (chat streamed and not, embeddings), a stream cut after its first tokens ends with
an in-band error event (the SDK raises it) rather than a splice, a bad upstream key is a clear 502,
and the planted key appears in no response, server log line, request-log row or metric. Then a real
corral as the upstream of another corral, answering as the upstream does when called directly."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.conftest import run_cli
from tests.gateway.standin_openai import StandIn
from tests.server.conftest import Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
KEY = "sk-PLANTED-0123456789"


def provider(name: str, url: str, key: str | None = "UP_KEY") -> str:
    return (f'[providers.{name}]\ntype = "openai"\nbase_url = "{url}"\n'
            + (f'api_key = "${{{key}}}"\n' if key else "")
            + "timeout = { connect = 2, first_token = 5, total = 10 }\nretries = { max = 0, backoff = 0 }\n")


def test_the_openai_sdk_through_corral_to_a_provider(tmp_path: Path) -> None:
    import openai

    with StandIn("up", reply="one two three four five six") as up:
        config = provider("up", up.url) + '[aliases]\nfast = ["up/small", "up/other"]\n'
        srv = Server(tmp_path / "gw", config=config, env={"UP_KEY": KEY})
        try:
            client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0)
            messages = [{"role": "user", "content": "count"}]
            whole = client.chat.completions.create(model="up/small", messages=messages)  # type: ignore[arg-type]
            assert whole.choices[0].message.content == "one two three four five six"
            assert whole.usage is not None and whole.usage.completion_tokens == 6 and whole.usage.prompt_tokens == 5
            streamed = client.chat.completions.create(model="fast", messages=messages, stream=True)  # type: ignore
            pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
            assert "".join(pieces) == whole.choices[0].message.content and len(pieces) >= 6
            vectors = client.embeddings.create(model="up/small", input=["a b", "c"])
            assert [len(d.embedding) for d in vectors.data] == [3, 3]

            up.faults.append(("status", 500))  # up/small fails before any token: fast goes on to up/other
            moved = client.chat.completions.create(model="fast", messages=messages)  # type: ignore[arg-type]
            assert moved.choices[0].message.content == "one two three four five six"
            assert [r["body"]["model"] for r in up.requests if r["method"] == "POST"][-2:] == ["small", "other"]

            up.faults.append(("cut", 3))  # three tokens reach the client, then the upstream's connection drops
            seen: list[str] = []
            with pytest.raises(openai.APIError) as broken:
                for chunk in client.chat.completions.create(model="fast", messages=messages, stream=True):  # type: ignore
                    seen.extend(c.delta.content or "" for c in chunk.choices)
            assert "".join(seen) == "one two three" and "up/small failed mid-answer" in str(broken.value)
            assert up.requests[-1]["body"]["model"] == "small"  # no switch to up/other after content

            up.faults.append(("status", 401))
            with pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(model="up/small", messages=messages)  # type: ignore[arg-type]
            assert refused.value.status_code == 502 and "refused corral's credentials" in str(refused.value)
            still = client.chat.completions.create(model="up/small", messages=messages)  # type: ignore[arg-type]
            assert still.choices[0].message.content

            metrics = httpx.get(f"{srv.url}/metrics").text
            logs = run_cli("logs", "--json", "-n", "50", env={"CORRAL_HOME": str(tmp_path / "gw")}).stdout
            assert "up/small" in logs and "up/other" in logs and KEY not in metrics + logs
        finally:
            srv.stop()
        assert all(r["authorization"] == f"Bearer {KEY}" for r in up.requests if r["method"] == "POST")
        stored = b"".join(p.read_bytes() for p in (tmp_path / "gw").rglob("*") if p.is_file())
        assert KEY.encode() not in stored  # not in the server's log, the request log, nor anything it wrote


def test_corral_as_the_upstream_of_corral(tmp_path: Path) -> None:
    import openai

    upstream = Server(tmp_path / "upstream", "--models", "smollm2", "--threads", "2")
    try:
        gateway = Server(tmp_path / "gateway", config=provider("lab", f"{upstream.url}/v1", key=None))
        try:
            ask = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12,
                   "temperature": 0, "seed": 1}
            direct = openai.OpenAI(base_url=f"{upstream.url}/v1", api_key="none").chat.completions.create(
                model="smollm2", **ask)  # type: ignore[call-overload]
            through = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none").chat.completions.create(
                model="lab/smollm2", **ask)  # type: ignore[call-overload]
            assert through.choices[0].message.content == direct.choices[0].message.content
            assert through.usage is not None and direct.usage is not None
            assert through.usage.completion_tokens == direct.usage.completion_tokens
        finally:
            gateway.stop()
    finally:
        upstream.stop()

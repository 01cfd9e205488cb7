"""The sidecar's conversations/* methods through a real sidecar subprocess over the fake engine
(tests/sidecar_fake.py): create, send unstreamed and streamed (stream/delta chunks, the final one with
``corral``), get shows both exchanges in order, list, delete, then unknown ids and bad params."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fake_engine import register_fake
from tests.sidecar.test_sidecar_fake import error_of, fake_sidecar

from corral.config import load_settings
from corral.models.store import Store
from corral.sidecar.protocol import CORRAL_ERROR, INVALID_PARAMS

pytestmark = pytest.mark.timeout(120)


def test_conversation_methods_round_trip(tmp_path: Path, corral_home: Path) -> None:
    register_fake(Store(load_settings().manifest_path), tmp_path / "fake", "echo")
    with fake_sidecar() as client:
        made = client.call("conversations/create", {"model": "echo", "system": "be brief"}, timeout=60)
        cid = made["id"]
        first = client.call("conversations/send", {"id": cid, "content": "one two three", "max_tokens": 3},
                            timeout=60)
        call = client.stream("conversations/send", {"id": cid, "content": "four five", "stream": True})
        deltas = list(call.deltas(timeout=60))
        second = call.final
        kept = client.call("conversations/get", {"id": cid}, timeout=60)
        listed = client.call("conversations/list", {}, timeout=60)
        deleted = client.call("conversations/delete", {"id": cid}, timeout=60)
        gone = error_of(client.start("conversations/get", {"id": cid}))
        unknown = error_of(client.start("conversations/send", {"id": "conv_" + "0" * 24, "content": "hi"}))
        no_content = error_of(client.start("conversations/send", {"id": cid}))
        bad_model = error_of(client.start("conversations/create", {"model": ""}))
    assert made["messages"] == [] and made["system"] == "be brief"
    assert first["object"] == "chat.completion" and first["choices"][0]["message"]["content"] == "one two three"
    assert first["corral"] == {"conversation": cid, "dropped_messages": 0} and "timings" in first
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in deltas if c["choices"]) == "four five"
    assert deltas[-1]["corral"] == {"conversation": cid, "dropped_messages": 0}
    assert second["choices"][0]["message"]["content"] == "four five" and second["corral"]["dropped_messages"] == 0
    assert second["usage"]["prompt_tokens"] == 2 + 3 + 3 + 2  # the first exchange was in the prompt
    assert [(m["role"], m["content"]) for m in kept["messages"]] == [
        ("user", "one two three"), ("assistant", "one two three"), ("user", "four five"), ("assistant", "four five")]
    assert [(c["id"], c["message_count"]) for c in listed["data"]] == [(cid, 4)]
    assert deleted == {"id": cid, "object": "conversation", "deleted": True}
    for err in (gone, unknown):
        assert err.code == CORRAL_ERROR and err.data["status"] == 404
        assert err.data["type"] == "ConversationNotFoundError"
    assert no_content.code == INVALID_PARAMS and no_content.data == {"param": "content"}
    assert bad_model.code == INVALID_PARAMS and bad_model.data == {"param": "model"}
    assert (corral_home / "conversations.db").is_file()

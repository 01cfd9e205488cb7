"""Presets (issue 19): built-in modes (``MODEL@code``) and config presets written by ``corral create``
reach the engine through every door as a system prompt and sampling defaults, and a request's own
values win. The fake engine records the request it was given, so each test reads what the model
really got. `corral create` / `corral list` / `corral rm` edit and show the config; bad names and
bad modes get their 4xx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.fake_engine import loaded_fake
from tests.server.test_fake_http import fake_runtime, register, run, serving

from corral.cli.main import main
from corral.presets import MODES
from corral.runtime.runtime import Runtime
from corral.sidecar import methods

pytestmark = pytest.mark.timeout(120)
USER = [{"role": "user", "content": "say something nice"}]
CODE = MODES["code"]


def got(rt: Runtime, name: str = "echo") -> Any:
    """The request the fake model ``name`` was last given."""
    return loaded_fake(rt, name).generations[-1].request


def system_of(request: Any) -> str | None:
    return next((m.content for m in request.messages if m.role == "system"), None)


def create(*args: str) -> int:
    return main(["create", *args])


def test_a_mode_applies_on_every_door_and_the_request_wins(tmp_path: Path) -> None:
    register(tmp_path, "echo")

    async def scenario() -> list[tuple[str, Any, Any]]:
        rt = fake_runtime()
        async with serving(rt) as (_, http):
            seen = []
            doors: list[tuple[str, str, dict[str, Any]]] = [
                ("openai", "/v1/chat/completions", {"model": "echo@code", "messages": USER}),
                ("ollama", "/api/chat", {"model": "echo@code", "messages": USER, "stream": False}),
                ("anthropic", "/v1/messages", {"model": "echo@code", "max_tokens": 50, "messages": USER}),
                ("responses", "/v1/responses", {"model": "echo@code", "input": "say something nice"}),
                ("own values", "/v1/chat/completions", {
                    "model": "echo@code", "temperature": 1.5, "top_p": 0.5,
                    "messages": [{"role": "system", "content": "be terse"}, *USER]}),
            ]
            for door, path, body in doors:
                r = await http.post(path, json=body)
                assert r.status_code == 200, (door, r.text)
                seen.append((door, got(rt), r.json()))
            r = await http.post("/v1/completions", json={"model": "echo@code", "prompt": "one two"})
            assert r.status_code == 200, r.text
            seen.append(("completion", got(rt), r.json()))
            # the HF task API takes the name (it serves no chat or completion: the same answer as for echo)
            hf = [await http.post(f"/models/{name}", json={"inputs": "one two"}) for name in ("echo@code", "echo")]
            assert [r.status_code for r in hf] == [400, 400] and hf[0].json() == hf[1].json()
            session = methods.Session(rt, 1, lambda method, params: None)
            answer = await methods.chat(session, {"model": "echo@code", "messages": USER})
            seen.append(("sidecar", got(rt), answer))
            return seen

    seen = run(scenario())
    for door, request, _ in seen[:4]:
        assert system_of(request) == CODE.system, door
        assert request.messages[0].role == "system" and request.messages[-1].content == "say something nice", door
        assert (request.sampling.temperature, request.sampling.top_p) == (0.2, 0.9), door
    own = seen[4][1]
    assert system_of(own) == "be terse" and [m.role for m in own.messages] == ["system", "user"]
    assert (own.sampling.temperature, own.sampling.top_p) == (1.5, 0.5)
    completion = seen[5][1]
    assert (completion.sampling.temperature, completion.sampling.top_p) == (0.2, 0.9)
    assert system_of(seen[6][1]) == CODE.system and seen[6][1].sampling.temperature == 0.2  # the sidecar
    assert seen[0][2]["choices"][0]["message"]["content"] == "say something nice"


def test_a_config_preset_from_corral_create(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    register(tmp_path, "echo")
    system = tmp_path / "persona.txt"
    system.write_text("You are Captain Echo.\nAnswer like a pirate.")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"words": {"type": "array"}}}))
    assert create("captain", "--from", "echo", "--system-file", str(system), "--temperature", "0.4",
                  "--max-tokens", "3", "--stop", "STOP", "--json-schema", str(schema)) == 0
    written = Path(capsys.readouterr().out.split(" in ")[1].split("\n")[0])
    assert '[aliases.captain]' in written.read_text() and 'targets = ["echo"]' in written.read_text()

    async def scenario() -> tuple[Any, Any, Any, Any]:
        rt = fake_runtime()
        async with serving(rt) as (_, http):
            r = await http.post("/v1/chat/completions", json={"model": "captain", "messages": USER})
            assert r.status_code == 200, r.text
            first = got(rt)
            r = await http.post("/v1/chat/completions", json={"model": "captain@creative", "messages": USER,
                                                              "max_tokens": 2})
            assert r.status_code == 200, r.text
            both = got(rt)
            models = (await http.get("/v1/models")).json()["data"]
            logs = (await http.get("/api/logs?limit=5")).json()
            return first, both, models, logs

    first, both, models, logs = run(scenario())
    assert system_of(first) == system.read_text()
    assert (first.sampling.temperature, first.sampling.max_tokens, first.sampling.stop) == (0.4, 3, ("STOP",))
    assert first.json_schema == json.loads(schema.read_text())
    # the mode first, then the preset fills what is left; the request's max_tokens wins over both
    assert system_of(both) == MODES["creative"].system
    assert (both.sampling.temperature, both.sampling.max_tokens, both.sampling.stop) == (1.0, 2, ("STOP",))
    assert "captain" in {m["id"] for m in models}
    assert {"captain", "captain@creative"} <= {row["model"] for row in logs["rows"]}


def test_create_list_and_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    register(tmp_path, "echo")
    config = Path(tmp_path / "config.toml")
    config.write_text("# my settings\n[aliases]\ntiny = \"echo\"  # keep this comment\n")
    assert create("coder", "--from", "echo@code", "--top-p", "0.5") == 0
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "coder" in listed and "echo@code" in listed and "top_p=0.5" in listed
    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["coder"]["preset"] == {"system": None, "top_p": 0.5} and rows["coder"]["targets"] == ["echo@code"]
    assert create("coder", "--from", "echo") == 1  # taken
    assert "already has an alias 'coder'" in capsys.readouterr().err
    assert create("coder", "--from", "echo", "--force", "--temperature", "0") == 0
    assert create("echo", "--from", "echo") == 1  # a model's name
    assert create("other", "--from", "nothing-here") == 1
    assert "'nothing-here'" in capsys.readouterr().err
    assert create("hot", "--from", "echo", "--temperature", "7") != 0
    assert "temperature" in capsys.readouterr().err
    assert create("a@b", "--from", "echo") == 2
    assert main(["rm", "coder"]) == 0
    text = config.read_text()
    assert "coder" not in text and "# keep this comment" in text and "# my settings" in text
    assert main(["rm", "coder"]) == 1  # gone: no model, no preset of that name
    capsys.readouterr()
    config.write_text(config.read_text() + '\n[aliases.ghostly]\ntargets = ["ghost"]\nsystem = "Boo."\n')
    assert main(["config", "validate"]) == 1
    assert "ghost" in capsys.readouterr().out


def test_bad_modes_and_presets(tmp_path: Path) -> None:
    register(tmp_path, "echo")
    register(tmp_path, "vectors", tasks=("embed",))

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        async with serving(fake_runtime()) as (_, http):
            answers = []
            for path, body in (
                    ("/v1/chat/completions", {"model": "echo@poetry", "messages": USER}),
                    ("/v1/embeddings", {"model": "vectors@code", "input": "x"}),
                    ("/v1/chat/completions", {"model": "vectors@code", "messages": USER}),
                    ("/v1/chat/completions", {"model": "missing@code", "messages": USER})):
                r = await http.post(path, json=body)
                answers.append((r.status_code, r.json()["error"]))
            return answers

    unknown_mode, embed_mode, cannot_chat, missing = run(scenario())
    assert unknown_mode[0] == 404 and "no mode 'poetry'" in unknown_mode[1]["message"]
    assert embed_mode[0] == 400 and "chat and completion" in embed_mode[1]["message"]
    assert cannot_chat[0] == 400 and "embed" in cannot_chat[1]["message"]
    assert missing[0] == 404 and "missing" in missing[1]["message"]


@pytest.mark.slow
def test_the_cli_runs_a_mode_and_a_preset_on_smollm2(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import run_cli

    assert create("terse", "--from", "smollm2@code", "--max-tokens", "3", "--system", "Answer in one word.") == 0
    preset = run_cli("run", "terse", "Name a fruit.", "--json")
    assert preset.returncode == 0, preset.stderr
    assert json.loads(preset.stdout)["usage"]["completion_tokens"] <= 3  # the preset's max_tokens
    mode = run_cli("run", "smollm2@code", "Say hi.", "--max-tokens", "2", "--json")
    assert mode.returncode == 0, mode.stderr
    assert json.loads(mode.stdout)["usage"]["completion_tokens"] <= 2
    bad = run_cli("run", "smollm2@poetry", "Say hi.")
    assert bad.returncode == 1 and "no mode 'poetry'" in bad.stderr and "Traceback" not in bad.stderr
    capsys.readouterr()
    assert main(["logs", "--json", "-n", "5"]) == 0
    logged = [row["model"] for row in json.loads(capsys.readouterr().out)]
    assert logged[:2] == ["smollm2@code", "terse"]

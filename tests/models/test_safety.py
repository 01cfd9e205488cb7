"""Safe loading: pickle and remote code are refused unless opted in; templates run sandboxed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import run_cli

from corral.errors import UnsafeModelError
from corral.models.inspect import inspect_path
from corral.models.safety import Trust, check_trust
from corral.tasks import Message
from corral.templating import ChatTemplateError, render_chat


def pickle_model(tmp_path: Path) -> Path:
    folder = tmp_path / "pickled"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    return folder


def remote_code_model(tmp_path: Path) -> Path:
    folder = tmp_path / "custom"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["MyForCausalLM"], "model_type": "mine",
        "auto_map": {"AutoConfig": "modeling_mine.MyConfig",
                     "AutoModelForCausalLM": "modeling_mine.MyForCausalLM"}}))
    (folder / "model.safetensors").write_bytes(b"\x02\0\0\0\0\0\0\0{}")
    (folder / "modeling_mine.py").write_text("raise SystemExit('remote code ran')\n")
    return folder


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".ckpt", ".pkl"])
def test_pickle_only_weights_flagged(tmp_path: Path, suffix: str) -> None:
    folder = pickle_model(tmp_path)
    (folder / "pytorch_model.bin").rename(folder / f"weights{suffix}")
    info = inspect_path(folder)
    assert info.format == "pickle" and info.needs_pickle
    with pytest.raises(UnsafeModelError, match="pickle"):
        check_trust("m", info, Trust())
    check_trust("m", info, Trust(allow_pickle=True))  # explicit opt-in passes the gate


def test_safetensors_beside_pickle_is_not_flagged(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    folder = pickle_model(tmp_path)
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(folder / "model.safetensors"))
    info = inspect_path(folder)
    assert info.format == "safetensors" and not info.needs_pickle


def test_remote_code_flagged_and_refused(tmp_path: Path) -> None:
    info = inspect_path(remote_code_model(tmp_path))
    assert info.needs_remote_code
    with pytest.raises(UnsafeModelError, match="trust-remote-code"):
        check_trust("m", info, Trust())
    check_trust("m", info, Trust(trust_remote_code=True))


def test_cli_refuses_pickle_and_remote_code(tmp_path: Path) -> None:
    r = run_cli("run", str(pickle_model(tmp_path)), "hi")
    assert r.returncode == 1 and "--allow-pickle" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("run", str(remote_code_model(tmp_path)), "hi")
    assert r.returncode == 1 and "--trust-remote-code" in r.stderr
    assert "remote code ran" not in r.stderr + r.stdout
    r = run_cli("inspect", str(remote_code_model(tmp_path)))
    assert r.returncode == 0 and "refused unless --trust-remote-code" in r.stdout


def test_trust_flag_reaches_transformers_only_when_given(tmp_path: Path) -> None:
    """The opt-in is the only way trust_remote_code=True reaches the library."""
    folder = remote_code_model(tmp_path)
    r = run_cli("run", str(folder), "hi", "--trust-remote-code", env={"CORRAL_DEBUG": ""})
    # transformers now executes the model's own code, which exits with our marker message
    assert "remote code ran" in r.stderr + r.stdout


TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}" \
           "{% if add_generation_prompt %}<assistant>{% endif %}"


def test_template_renders() -> None:
    out = render_chat(TEMPLATE, [Message("system", "be brief"), Message("user", "hi")])
    assert out == "<system>be brief</system><user>hi</user><assistant>"


@pytest.mark.parametrize("evil", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.append({'role': 'x'}) }}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "{{ cycler.__init__.__globals__.os.system('echo pwned') }}",
])
def test_template_sandbox_blocks_escapes(evil: str) -> None:
    with pytest.raises(ChatTemplateError):
        render_chat(evil, [Message("user", "hi")])


def test_template_raise_exception_is_a_clear_error() -> None:
    with pytest.raises(ChatTemplateError, match="only user and assistant"):
        render_chat("{{ raise_exception('only user and assistant') }}", [Message("system", "x")])

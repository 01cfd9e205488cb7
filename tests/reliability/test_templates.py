"""The catalogue's row 4 (issue 18): chat templates from model files are strangers' code. Escapes
from the sandbox run nothing (a canary file stays absent), endless or explosive templates stop at
their bounds with a clear error, a template that does not parse is a clear error, and a model whose
template is broken still serves its other tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.tasks import Message
from corral.templating import MAX_STEPS, ChatTemplateError, render_chat

pytestmark = pytest.mark.timeout(60)  # an unbounded template would hang here
HELLO = [Message("user", "hello")]


def escapes(canary: Path) -> list[str]:
    """Known ways out of a Jinja sandbox, each trying to create ``canary``."""
    touch = f"touch {canary}"
    return [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        f"{{{{ cycler.__init__.__globals__.os.system('{touch}') }}}}",
        f"{{{{ joiner.__init__.__globals__['os'].popen('{touch}').read() }}}}",
        f"{{{{ namespace.__init__.__globals__.os.system('{touch}') }}}}",
        "{{ self._TemplateReference__context }}",
        "{{ lipsum.__globals__['os'] }}",
        "{% set x = messages.append({'role': 'system'}) %}{{ messages }}",
        "{{ raise_exception.__globals__ }}",
        f"{{{{ ().__class__.__base__.__subclasses__() }}}}{{{{ '{touch}' }}}}",
    ]


def test_escapes_run_nothing(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    for source in escapes(canary):
        try:
            out = render_chat(source, HELLO)
        except ChatTemplateError as exc:
            assert "chat template" in exc.message
        else:
            assert "os" not in out and "subclasses" not in out, (source, out)
    assert not canary.exists()


@pytest.mark.parametrize(("source", "why"), [
    ("{% for i in range(10**9) %}x{% endfor %}", "loops too long"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "loops too long"),
    ("{% for i in range(99999) %}{% endfor %}{% for i in range(99999) %}{% endfor %}", "loops too long"),
    ("{{ 'x' * 10**9 }}", "builds a value"),
    ("{{ [1] * 10**8 }}", "builds a value"),
    ("{{ 9**999999 }}", "bits"),
    ("{{ (((9**64)**64)**64)**64 }}", "bits"),
    ("{{ 9.0**99999 }}", "failed"),
    ("{% for i in range(90000) %}" + "x" * 100 + "{% endfor %}", "writes more than"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "failed"),
])
def test_explosive_templates_stop_at_their_bounds(source: str, why: str) -> None:
    with pytest.raises(ChatTemplateError) as stopped:
        render_chat(source, HELLO)
    assert why in stopped.value.message and stopped.value.http_status == 422


def test_a_template_that_does_not_parse_is_a_clear_error() -> None:
    with pytest.raises(ChatTemplateError, match="does not parse"):
        render_chat("{% for m in messages %}{{ m.content }", HELLO)


def test_ordinary_templates_and_loops_still_work() -> None:
    source = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
              "{% for i in range(3) %}{{ i }}{% endfor %}{{ 'ab' * 2 }}{{ 2**10 }}")
    assert render_chat(source, HELLO) == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n012abab1024"
    budget = "{% for i in range(" + str(MAX_STEPS) + ") %}{% endfor %}done"
    assert render_chat(budget, HELLO) == "done" and render_chat(budget, HELLO) == "done"  # per rendering


def test_a_broken_template_disables_chat_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fixtures.tiny_models import build_causal_lm

    from corral.cli.main import main

    model = build_causal_lm("llama", tmp_path / "lm").path  # its ChatML template in chat_template.jinja
    (model / "chat_template.jinja").write_text("{% for i in range(100000) %}{% for j in range(100000) %}"
                                               "{% endfor %}{% endfor %}")
    assert main(["run", str(model), "hello", "--max-tokens", "2"]) == 1  # chat: refused with the reason
    assert "loops too long" in capsys.readouterr().err
    assert main(["run", str(model), "--task", "complete", "hello", "--max-tokens", "2", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip()  # completion, which uses no template, still serves

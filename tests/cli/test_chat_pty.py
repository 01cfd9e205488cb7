"""`corral chat` driven through a pseudo-terminal, as a person would: multi-turn history,
Ctrl-C stops the current answer (not the session), /exit leaves."""

from __future__ import annotations

import json
import os
import sys

import pexpect
from tests.conftest import run_cli

PROMPT = ">>> "


def spawn(*extra: str) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "corral", "chat", "smollm2", *extra], env=dict(os.environ),
                          encoding="utf-8", timeout=120, dimensions=(40, 200))
    child.expect("chatting with smollm2")
    child.expect_exact(PROMPT)
    return child


def test_multi_turn_and_exit() -> None:
    child = spawn("--temperature", "0", "--max-tokens", "12")
    child.sendline("My name is Ada.")
    child.expect_exact(PROMPT)
    first = child.before
    assert first.strip().splitlines()[-1].strip()  # an answer was streamed
    child.sendline("/reset")
    child.expect_exact("(history cleared)")
    child.expect_exact(PROMPT)
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_history_is_kept_between_turns() -> None:
    """The second answer differs from the same question asked without history."""
    child = spawn("--temperature", "0", "--max-tokens", "16")
    child.sendline("What is 2+2?")
    child.expect_exact(PROMPT)
    child.sendline("And what is that times ten?")
    child.expect_exact(PROMPT)
    with_history = child.before.split("And what is that times ten?", 1)[-1].strip()
    child.sendline("/reset")
    child.expect_exact(PROMPT)
    child.sendline("And what is that times ten?")
    child.expect_exact(PROMPT)
    without = child.before.split("And what is that times ten?", 1)[-1].strip()
    assert with_history and without and with_history != without
    child.sendeof()
    child.expect(pexpect.EOF)


def test_ctrl_c_stops_answer_not_session() -> None:
    child = spawn("--temperature", "0", "--max-tokens", "400")
    child.sendline("Write a very long story about a dragon.")
    child.expect_exact("dragon.\r\n")  # the line's echo
    child.expect(r"\w+ \w+ \w+")  # the answer has started streaming
    child.sendintr()
    child.expect_exact("(stopped)")
    child.expect_exact(PROMPT)
    child.sendline("Say yes.")
    child.expect_exact(PROMPT)  # the session still answers
    child.sendintr()  # Ctrl-C at an empty prompt: a hint, not an exit
    child.expect_exact("use /exit or Ctrl-D")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    answered, stopped = json.loads(run_cli("logs", "--json").stdout)[:2]  # newest first
    assert (stopped["door"], stopped["status"]) == ("cli", 499)  # a stopped answer is a cancelled call
    assert stopped["completion_tokens"] > 0 and answered["status"] == 200

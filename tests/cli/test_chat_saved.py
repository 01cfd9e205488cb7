"""`corral chat MODEL --save NAME` / `--resume NAME` through the real CLI with stdin lines and the real
SmolLM2 GGUF: every exchange kept under CORRAL_HOME, a history past a small context (--ctx 80) leaves
its oldest exchange out of the prompt and says so (the store keeps it), a resume prints the last
turns and goes on, an unknown name is a clear not-found error."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli

from corral.runtime.conversations import ConversationStore

LINES = ["one two three four five six seven eight nine ten", "eleven twelve thirteen fourteen fifteen sixteen",
         "seventeen eighteen nineteen twenty", "alpha beta gamma delta"]


def test_chat_save_resume_and_an_unknown_name(corral_home: Path) -> None:
    flags = ("--temperature", "0", "--max-tokens", "6", "--ctx", "80")
    saved = run_cli("chat", "smollm2", "--save", "notes", "--system", "Be brief.", *flags,
                    input="\n".join([*LINES, "/exit"]) + "\n")
    assert saved.returncode == 0, saved.stderr
    assert "saved as notes" in saved.stdout
    assert "oldest messages no longer fit the model's context" in saved.stdout  # the 4th turn left one exchange out
    kept = ConversationStore(corral_home, -1).named("notes")
    assert (kept.model, kept.system, kept.skipped) == ("smollm2", "Be brief.", 2)
    assert [m["content"] for m in kept.messages if m["role"] == "user"] == LINES  # the store keeps everything
    assert all(m["content"] for m in kept.messages if m["role"] == "assistant")

    resumed = run_cli("chat", "--resume", "notes", *flags, input="omega\n/exit\n")
    assert resumed.returncode == 0, resumed.stderr
    shown = resumed.stdout.split("chatting with", 1)[0]
    assert "resuming notes (8 messages kept)" in shown and f">>> {LINES[-1]}" in shown and LINES[0] not in shown
    after = ConversationStore(corral_home, -1).named("notes")
    assert len(after.messages) == 10 and after.messages[-2] == {"role": "user", "content": "omega"}

    unknown = run_cli("chat", "--resume", "nope")
    assert unknown.returncode == 1 and "no saved chat is named 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr

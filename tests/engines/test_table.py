"""Tasks and engines are data: every task an engine declares has its implementation, every
engine's extra exists and is pinned, and a model only reaches a handler that declares its task."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.fixtures import tiny_media
from tests.test_install import pins

from corral.engines.base import Handler, handler_class
from corral.engines.table import ENGINES
from corral.errors import UnsupportedTaskError
from corral.models.inspect import inspect_path
from corral.tasks import TASKS, Task

ROOT = Path(__file__).resolve().parents[2]


def test_there_are_nineteen_tasks_and_every_spec_is_well_formed() -> None:
    assert len(Task) == 19 and Task.CLASSIFY_TOKENS in Task
    for task, spec in TASKS.items():
        assert dataclasses.is_dataclass(spec.request) and dataclasses.is_dataclass(spec.result), task
        assert spec.method.isidentifier()


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_declared_task_has_an_implementation(engine: str) -> None:
    spec = ENGINES[engine]
    joint = {target: needed for needed, target in spec.together}
    for target, tasks in spec.implementations().items():
        for task in tasks:
            assert task in TASKS, f"{engine} declares {task}, which has no TaskSpec"
        cls = handler_class(engine, [t.value for t in joint.get(target, {min(tasks)})])
        assert f"{cls.__module__}:{cls.__qualname__}" == target
        assert issubclass(cls, Handler) and cls.engine == engine
        for task in tasks:
            assert callable(getattr(cls, TASKS[task].method, None)), f"{target} lacks {TASKS[task].method}"


def test_a_model_with_a_joint_set_of_tasks_reaches_the_joint_handler() -> None:
    from corral.engines.table import HF_CAPTIONER, HF_LM, HF_VISION_CHAT

    spec = ENGINES["transformers"]
    vlm = ["describe_image", "chat"]
    assert spec.handler_for(vlm) == HF_VISION_CHAT
    assert spec.served_by(HF_VISION_CHAT, vlm) == {Task.CHAT, Task.DESCRIBE_IMAGE}
    assert spec.served_by(HF_LM, vlm) == frozenset()  # a vision chat model never lands in the causal-LM handler
    assert spec.handler_for(["describe_image"]) == HF_CAPTIONER  # a captioner alone stays a captioner
    assert spec.handler_for(["chat", "complete"]) == HF_LM
    assert spec.served_by(HF_LM, ["chat", "complete"]) == {Task.CHAT, Task.COMPLETE}


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_extra_exists_is_in_all_and_dev_and_is_pinned(engine: str) -> None:
    spec = ENGINES[engine]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned = pins()
    for package in spec.packages:
        assert package.lower().replace("_", "-") in pinned, f"{package} is not in constraints.txt"
    if not spec.handlers:
        return  # detected only; its extra comes with the issue that makes it runnable
    assert spec.extra in extras
    assert any(spec.extra in req for req in extras["all"]) and any(spec.extra in req for req in extras["dev"])


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_dtypes_and_devices_are_declared_and_checked(engine: str) -> None:
    from corral.engines.table import check_dtype
    from corral.errors import UsageError

    spec = ENGINES[engine]
    assert spec.devices and set(spec.devices) <= {"cpu", "cuda", "mps"}
    check_dtype(engine, None)  # the engine's default is always allowed
    for dtype in spec.dtypes:
        check_dtype(engine, dtype)
    with pytest.raises(UsageError):
        check_dtype(engine, "int3")


def test_each_family_reaches_its_own_handler_and_an_unserved_task_is_refused(tmp_path: Path) -> None:
    folder = tiny_media.build_vit(tmp_path / "vit").path
    info = inspect_path(folder)
    assert info.engine == "transformers" and info.tasks == ["classify_image"]
    assert handler_class(info.engine, info.tasks).__name__ == "VisionHandler"  # never the language-model handler
    whisper = tiny_media.build_whisper(tmp_path / "whisper").path
    heard = inspect_path(whisper)
    assert heard.engine == "transformers" and heard.tasks == ["transcribe"]
    assert handler_class(heard.engine, heard.tasks).__name__ == "SpeechRecognizerHandler"
    report = json.loads(run_cli("inspect", str(whisper), "--json").stdout)
    assert "POST /v1/audio/transcriptions" in report["routes"]["transcribe"]
    # a task the table has no handler for is detected, named and refused before anything loads
    rows = dict(ENGINES)
    rows["transformers"] = dataclasses.replace(ENGINES["transformers"], handlers={
        t: h for t, h in ENGINES["transformers"].handlers.items() if t is not Task.TRANSCRIBE})
    with pytest.raises(UnsupportedTaskError, match="cannot run transformers models for transcribe yet"):
        handler_class(heard.engine, heard.tasks, rows)
    from corral.models.store import Entry
    from corral.runtime.loader import entry_task

    with pytest.raises(UnsupportedTaskError, match="it is a transcribe model, which corral cannot run yet"):
        entry_task(Entry("whisper", str(whisper), "path", whisper, False, heard, 0.0), Task.TRANSCRIBE, engines=rows)

"""The catalogue's row 6, the fuzzer's half (issue 18): schemathesis reads the app's own /openapi.json
and drives every operation in it (every door: OpenAI, rerank, HF, Ollama, Anthropic, Responses and the
admin API) in-process over ASGI, with data that fits each schema and data that breaks it (a few cases
per operation and mode: a few hundred in all, no deadline, no stateful phase). Its
``not_a_server_error`` check holds for every answer, and every error answer is the JSON error object
of the API its path belongs to. The app runs over the fake engine (a chat model, an embedding model),
its lifespan started and stopped by schemathesis' ASGI transport."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi
from tests.reliability.test_http_bodies import well_formed_error
from tests.server.test_fake_http import fake_runtime, register

from corral.api.app import ServeOptions, create_app
from corral.api.guard import ServerState

pytestmark = pytest.mark.timeout(300)
EXAMPLES = 6  # per operation and mode (~50 operations; negative data where a body or query can be broken)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,  # no stateful phase: a phase of its own
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def fuzz(operation: Any, mode: GenerationMode, answered: list[int]) -> Any:
    """The hypothesis test of one operation in one mode."""
    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def generated(case: Any) -> None:
        response = case.call_and_validate(checks=[not_a_server_error])
        answered.append(response.status_code)
        if response.status_code >= 400:
            assert well_formed_error(operation.path, response.json()), (operation.label, response.text[:300])
    return generated


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    register(tmp_path, "echo")
    register(tmp_path, "vec", tasks=("embed",))
    # schemathesis' ASGI client sends Host: testserver; the guard lets only allowed hosts in
    app = create_app(fake_runtime(), ServeOptions(allowed_hosts=["testserver"]), ServerState())
    answered: list[int] = []
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 40 and {op.path for op in operations} >= {"/v1/chat/completions", "/api/chat",
                                                                          "/v1/messages", "/v1/responses"}
        for operation in operations:
            fuzz(operation, GenerationMode.POSITIVE, answered)()
            if operation.body or list(operation.query):  # something with a shape to break (a bare path has none)
                fuzz(operation, GenerationMode.NEGATIVE, answered)()
    finally:
        schemathesis_asgi.shutdown_lifespans()  # the runtime's shutdown: models unloaded, logs closed
    assert len(answered) >= len(operations)  # every operation was called
    assert any(200 <= status < 300 for status in answered)  # not only refusals

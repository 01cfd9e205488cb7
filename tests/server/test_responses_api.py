"""corral serve as an OpenAI Responses server, driven by the official ``openai`` SDK's
``client.responses`` unchanged (a real server on 127.0.0.1, the packaged SmolLM2): string and item
input, instructions, the token limit (incomplete), the typed stream events, function tools (forced
calls, a call output fed back), json_schema output, and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import openai
import pytest
from openai import OpenAI
from tests.server.conftest import Server

TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("responses"), "--models", "smollm2", "--threads", "2")
    yield server
    server.stop()


@pytest.fixture
def client(srv: Server) -> OpenAI:
    return OpenAI(base_url=f"{srv.url}/v1", api_key="unused")


def test_text_whole_and_streamed(client: OpenAI) -> None:
    whole = client.responses.create(model="smollm2", input="Name three colours.", max_output_tokens=12,
                                    temperature=0)
    assert whole.object == "response" and whole.status == "incomplete"
    assert whole.incomplete_details and whole.incomplete_details.reason == "max_output_tokens"
    assert whole.output_text and whole.usage and whole.usage.output_tokens == 12
    assert whole.usage.total_tokens == whole.usage.input_tokens + 12
    events = list(client.responses.create(model="smollm2", input="Name three colours.", max_output_tokens=12,
                                          temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text == events[-1].response.output_text  # type: ignore[union-attr]
    told = client.responses.create(model="smollm2", instructions="Answer in French.", max_output_tokens=12,
                                   temperature=0, input=[{"role": "user", "content": "Name three colours."}])
    assert told.instructions == "Answer in French." and told.output_text != whole.output_text


def test_function_calls_and_their_output(client: OpenAI) -> None:
    called = client.responses.create(model="smollm2", input="What is the weather in Paris?", tools=TOOLS,
                                     tool_choice="required", temperature=0, max_output_tokens=60)
    call = called.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and called.status == "completed"
    jsonschema.validate(json.loads(call.arguments), TOOLS[0]["parameters"])  # type: ignore[arg-type]
    with client.responses.stream(model="smollm2", input="What is the weather in Paris?", tools=TOOLS,
                                 tool_choice={"type": "function", "name": "get_weather"}, temperature=0,
                                 max_output_tokens=60) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    assert final.output[0].type == "function_call" and final.output[0].arguments == call.arguments
    answer = client.responses.create(model="smollm2", tools=TOOLS, temperature=0, max_output_tokens=8, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "22C and sunny"}])
    assert answer.usage and answer.usage.input_tokens > called.usage.input_tokens  # type: ignore[union-attr]


def test_json_schema_output(client: OpenAI) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    shaped = client.responses.create(model="smollm2", input="Favourite colour?", temperature=0, max_output_tokens=60,
                                     text={"format": {"type": "json_schema", "name": "colour", "schema": schema}})
    jsonschema.validate(json.loads(shaped.output_text), schema)


def test_errors(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nosuch", input="x")
    with pytest.raises(openai.APIStatusError) as kept:
        client.responses.create(model="smollm2", input="x", previous_response_id="resp_123")
    assert "keeps no responses" in str(kept.value) and "--store-responses" in str(kept.value)
    assert kept.value.status_code == 400
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="smollm2", input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    ignored = client.responses.create(model="smollm2", input="x", max_output_tokens=2,
                                      extra_body={"some_future_field": {"a": 1}})  # unknown fields are ignored
    assert ignored.output_text


def test_stored_responses_continue_a_conversation(make_server: type[Server]) -> None:
    srv = make_server("--models", "smollm2", "--threads", "2", "--store-responses")
    client = OpenAI(base_url=f"{srv.url}/v1", api_key="unused")
    first = client.responses.create(model="smollm2", input="My name is Ada.", max_output_tokens=8, temperature=0)
    assert first.store is True and first.usage
    later = client.responses.create(model="smollm2", input="What is my name?", previous_response_id=first.id,
                                    max_output_tokens=8, temperature=0)
    alone = client.responses.create(model="smollm2", input="What is my name?", max_output_tokens=8, temperature=0,
                                    store=False)
    assert later.previous_response_id == first.id and later.usage and alone.usage
    # the earlier turn and its answer went in with the new input
    assert later.usage.input_tokens >= alone.usage.input_tokens + first.usage.output_tokens
    assert client.responses.retrieve(first.id).output_text == first.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(alone.id)  # store=False: not kept
    streamed = list(client.responses.create(model="smollm2", input="Hi", max_output_tokens=4, stream=True))
    kept_id = streamed[-1].response.id  # type: ignore[union-attr]
    assert client.responses.retrieve(kept_id).output_text == streamed[-1].response.output_text  # type: ignore[union-attr]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="smollm2", input="x", previous_response_id=first.id)
    assert (srv.home / "responses.db").is_file()


def test_retention_and_nothing_kept_without_the_flag(make_server: type[Server], srv: Server) -> None:
    short = make_server("--models", "smollm2", "--threads", "2", "--store-responses", "--response-retention", "0")
    client = OpenAI(base_url=f"{short.url}/v1", api_key="unused")
    gone = client.responses.create(model="smollm2", input="Hi", max_output_tokens=2)
    with pytest.raises(openai.NotFoundError) as expired:
        client.responses.create(model="smollm2", input="x", previous_response_id=gone.id)
    assert "retention" in str(expired.value)
    assert not (srv.home / "responses.db").exists()  # the module's server runs without the flag

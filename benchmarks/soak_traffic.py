"""bench_soak.py's mixed traffic: client threads (httpx, one keep-alive client each) sending a weighted
mix of requests to a running `corral serve`: chat whole and streamed (OpenAI, Ollama, Anthropic shapes),
completions, embeddings, streams the client leaves after the first chunk, and bad requests; every answer's
status counted per kind. Transport failures count under their exception's name."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx

TOPICS = ("a lighthouse", "a lost robot", "bread", "chess", "the sea", "a cat", "music", "Mars", "rain", "trains")
CHAT_MODEL, EMBED_MODEL = "smollm2", "minilm"


def _chat(model: str, rng: random.Random, stream: bool, tokens: int = 16) -> dict[str, object]:
    return {"model": model, "stream": stream, "max_tokens": tokens, "temperature": rng.choice((0.0, 0.7)),
            "messages": [{"role": "user", "content": f"Write one sentence about {rng.choice(TOPICS)}."}]}


def _streamed(client: httpx.Client, path: str, body: dict[str, object], leave_after: int | None = None) -> int:
    """POST a streamed request and read it to the end (or leave after ``leave_after`` data lines)."""
    with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data:") or line.startswith("{"):
                seen += 1
                if leave_after is not None and seen >= leave_after:
                    return -r.status_code  # negative: the client left mid-stream (closing the connection)
        return r.status_code


def chat(c: httpx.Client, rng: random.Random, model: str = CHAT_MODEL) -> int:
    return c.post("/v1/chat/completions", json=_chat(model, rng, False)).status_code


def chat_stream(c: httpx.Client, rng: random.Random, model: str = CHAT_MODEL) -> int:
    return _streamed(c, "/v1/chat/completions", _chat(model, rng, True))


def chat_left(c: httpx.Client, rng: random.Random) -> int:
    return _streamed(c, "/v1/chat/completions", _chat(CHAT_MODEL, rng, True, tokens=64), leave_after=1)


def completion(c: httpx.Client, rng: random.Random) -> int:
    body = {"model": CHAT_MODEL, "prompt": f"Once upon a time, {rng.choice(TOPICS)}", "max_tokens": 16}
    return c.post("/v1/completions", json=body).status_code


def completion_stream(c: httpx.Client, rng: random.Random) -> int:
    body = {"model": CHAT_MODEL, "prompt": f"The story of {rng.choice(TOPICS)}:", "max_tokens": 16, "stream": True}
    return _streamed(c, "/v1/completions", body)


def embeddings(c: httpx.Client, rng: random.Random) -> int:
    inputs = [f"a sentence about {rng.choice(TOPICS)}" for _ in range(rng.randint(1, 8))]
    return c.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": inputs}).status_code


def ollama_chat(c: httpx.Client, rng: random.Random) -> int:
    body = _chat(CHAT_MODEL, rng, False)
    body["options"] = {"num_predict": body.pop("max_tokens"), "temperature": body.pop("temperature")}
    return c.post("/api/chat", json=body).status_code


def anthropic_stream(c: httpx.Client, rng: random.Random) -> int:
    return _streamed(c, "/v1/messages", _chat(CHAT_MODEL, rng, True))


def tiny_chat(c: httpx.Client, rng: random.Random) -> int:
    return chat(c, rng, "tiny-gpt2")


def tiny_stream(c: httpx.Client, rng: random.Random) -> int:
    return chat_stream(c, rng, "tiny-gpt2")


def bad(c: httpx.Client, rng: random.Random) -> int:
    """One of: malformed JSON, max_tokens -1, top_p 2, an unknown model, chat to an embedding model."""
    which = rng.randrange(5)
    if which == 0:
        return c.post("/v1/chat/completions", content=b'{"model": "smollm2", "messages": [',
                      headers={"content-type": "application/json"}).status_code
    body = _chat(CHAT_MODEL, rng, False)
    if which == 1:
        body["max_tokens"] = -1
    elif which == 2:
        body["top_p"] = 2
    elif which == 3:
        body["model"] = f"no-such-model-{rng.randrange(10**6)}"
    else:
        body["model"] = EMBED_MODEL
    return c.post("/v1/chat/completions", json=body).status_code


Kind = Callable[[httpx.Client, random.Random], int]
MIX: dict[str, tuple[Kind, int]] = {  # kind -> (request, weight)
    "chat": (chat, 4), "chat_stream": (chat_stream, 4), "chat_left_mid_stream": (chat_left, 2),
    "completion": (completion, 2), "completion_stream": (completion_stream, 2), "embeddings": (embeddings, 6),
    "ollama_chat": (ollama_chat, 1), "anthropic_stream": (anthropic_stream, 1), "bad_request": (bad, 3),
}
TINY: dict[str, tuple[Kind, int]] = {"tiny_chat": (tiny_chat, 1), "tiny_stream": (tiny_stream, 1)}


class Traffic:
    """``clients`` threads sending the mix until :meth:`stop`; ``counts[(kind, status)]``."""

    def __init__(self, url: str, clients: int, mix: dict[str, tuple[Kind, int]], seed: int = 0) -> None:
        self.url, self.mix = url, mix
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(random.Random(seed + i),), daemon=True)
                         for i in range(clients)]

    def start(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(180)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def _client(self, rng: random.Random) -> None:
        names = list(self.mix)
        weights = [self.mix[n][1] for n in names]
        with httpx.Client(base_url=self.url, timeout=180) as client:
            while not self._stop.is_set():
                kind = rng.choices(names, weights)[0]
                try:
                    status = self.mix[kind][0](client, rng)
                    outcome = f"{-status} (left)" if status < 0 else str(status)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                    time.sleep(0.5)
                with self._lock:
                    self.counts[(kind, outcome)] += 1

    def summary(self) -> dict[str, object]:
        with self._lock:
            by_status: Counter[str] = Counter()
            for (_, outcome), n in self.counts.items():
                by_status[outcome] += n
            return {"requests": sum(self.counts.values()), "by_status": dict(sorted(by_status.items())),
                    "by_kind": {f"{k} {o}": n for (k, o), n in sorted(self.counts.items())}}


def table(summary: dict[str, object]) -> str:
    by_kind = summary["by_kind"]
    assert isinstance(by_kind, dict)
    lines = ["| kind | outcome | requests |", "|---|---|---:|"]
    lines += ["| {} | {} | {} |".format(*key.split(" ", 1), n) for key, n in by_kind.items()]
    return "\n".join(lines) + "\n\nby status: " + json.dumps(summary["by_status"])

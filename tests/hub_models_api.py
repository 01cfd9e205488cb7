"""The stand-in Hub's listing and account side (tests/hub_server.py, answered by tests/hub_handler.py), pure:
what ``GET /api/models`` and ``GET /api/whoami-v2`` answer, and when a gated or private repo refuses a request.

* ``GET /api/models``: ``FakeHub.listed`` (model entries as the Hub stores them: ``id``, ``pipeline_tag``,
  ``library_name``, ``tags``, ``downloads``, ``likes``, ``lastModified``, ``gated``, ``safetensors``, ``gguf``,
  ``config``, ``siblings``, ...) filtered by ``search`` (in the id, any case), ``author``, ``filter`` (each one a
  tag, the library or the task), ``pipeline_tag`` and ``gated``; sorted by ``sort`` (descending unless
  ``direction=1``); ``limit`` items a page (at most ``FakeHub.page_size``), the next page named by a ``Link:
  <...>; rel="next"`` header with a ``cursor`` as the Hub paginates. Fields: the Hub's default few, everything
  but ``config`` / ``gguf`` / ``safetensors`` with ``full=true``, or exactly ``id`` plus those asked for with
  ``expand`` / ``expand[]`` (an unknown one is a 400, as on the Hub).
* ``GET /api/whoami-v2``: 200 ``{"name": USER, "auth": {"accessToken": {...}}}`` for a bearer token in
  ``FakeHub.tokens`` (token -> user name), 401 ``Invalid credentials in Authorization header`` otherwise.
* A repo with ``FakeHub.gate`` ("auto" / "manual") lists and shows its metadata to anyone, but its files
  (``/resolve/``) answer 401 ``GatedRepo`` without a token and 403 ``GatedRepo`` with a token not in
  ``FakeHub.granted``; a ``FakeHub.private`` repo answers 401 ``RepoNotFound`` on every route without a token and
  404 ``RepoNotFound`` with one not granted. These are the status, ``X-Error-Code`` and ``X-Error-Message`` the
  Hub sends, from which huggingface_hub raises GatedRepoError / RepositoryNotFoundError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

if TYPE_CHECKING:
    from tests.hub_server import FakeHub

DEFAULT_FIELDS = ("_id", "id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag",
                  "library_name", "createdAt", "modelId")
NOT_IN_FULL = frozenset({"config", "gguf", "safetensors", "cardData", "transformersInfo"})
EXPANDABLE = frozenset({
    "author", "cardData", "config", "createdAt", "disabled", "downloads", "downloadsAllTime", "evalResults", "gated",
    "gguf", "inference", "inferenceProviderMapping", "lastModified", "library_name", "likes", "mask_token",
    "model-index", "pipeline_tag", "private", "safetensors", "sha", "siblings", "spaces", "tags", "transformersInfo",
    "trendingScore", "widgetData", "resourceGroup"})
SORTS = frozenset({"downloads", "likes", "lastModified", "trendingScore", "createdAt"})

Answer = tuple[int, Any, dict[str, str]]  # status, JSON body, extra headers


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if value is None or not value.lower().startswith("bearer "):
        return None
    return value[len("bearer "):].strip() or None


def error(status: int, message: str, code: str | None = None) -> Answer:
    headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
    return status, {"error": message}, headers


def whoami(hub: FakeHub, token: str | None) -> Answer:
    user = hub.tokens.get(token or "")
    if user is None:
        return error(401, "Invalid credentials in Authorization header")
    access = {"displayName": "corral-test", "role": "read"}
    return 200, {"type": "user", "id": f"id-{user}", "name": user, "fullname": user, "orgs": [],
                 "auth": {"type": "access_token", "accessToken": access}}, {}


def refusal(hub: FakeHub, token: str | None, *, files: bool, site: str) -> Answer | None:
    """How the repo refuses this request (None: it does not): private repos on every route, gated ones on files."""
    if token is not None and token in hub.granted:
        return None
    repo = hub.repo_id
    if hub.private:
        if token is None:
            return error(401, "Invalid username or password.", "RepoNotFound")
        return error(404, "Repository not found", "RepoNotFound")
    if hub.gate and files:
        if token is None:
            return error(401, f"Access to model {repo} is restricted. You must have access to it and be "
                              "authenticated to access it. Please log in.", "GatedRepo")
        return error(403, f"Access to model {repo} is restricted and you are not in the authorized list. "
                          f"Visit {site}/{repo} to ask for access.", "GatedRepo")
    return None


def _matches(model: Mapping[str, Any], q: Mapping[str, list[str]]) -> bool:
    model_id = str(model["id"])
    labels = {*map(str, model.get("tags") or ()), str(model.get("library_name")), str(model.get("pipeline_tag"))}
    gated = q.get("gated", [""])[0].lower()
    return (all(s.lower() in model_id.lower() for s in q.get("search", []))
            and all(model_id.startswith(a + "/") for a in q.get("author", []))
            and all(f in labels for f in q.get("filter", []))
            and all(model.get("pipeline_tag") == t for t in q.get("pipeline_tag", []))
            and (not gated or (gated == "true") == bool(model.get("gated"))))


def _fields(model: Mapping[str, Any], q: Mapping[str, list[str]]) -> dict[str, Any]:
    expand = q.get("expand", []) + q.get("expand[]", [])
    full = q.get("full", [""])[0].lower() in ("true", "1")
    if expand:
        keep: set[str] = {"_id", "id", *expand}
    elif full:
        keep = set(model) - NOT_IN_FULL | {"_id", "id"}
    else:
        keep = set(DEFAULT_FIELDS)
    entry = {"_id": f"id-{model['id']}", "modelId": model["id"], **model}
    return {k: v for k, v in entry.items() if k in keep}


def list_models(hub: FakeHub, query: str, base: str) -> Answer:
    """One page of ``GET /api/models?{query}``; ``base``: ``http://host:port`` for the next page's link."""
    q = parse_qs(query, keep_blank_values=True)
    unknown = [e for e in q.get("expand", []) + q.get("expand[]", []) if e not in EXPANDABLE]
    if unknown:
        return error(400, f"Invalid expand: {unknown[0]}")
    sort = q.get("sort", [""])[0]
    if sort and sort not in SORTS:
        return error(400, f"Invalid sort: {sort}")
    try:
        limit = min(int(q.get("limit", [str(hub.page_size)])[0]), hub.page_size)
        start = int(q.get("cursor", ["0"])[0])
    except ValueError:
        return error(400, "limit and cursor must be integers")
    found = [m for m in hub.listed if _matches(m, q)]
    if sort:
        dated = sort in ("lastModified", "createdAt")  # ISO strings, which sort as dates
        found.sort(key=lambda m: str(m.get(sort) or "") if dated else (m.get(sort) or 0),
                   reverse=q.get("direction", ["-1"])[0] != "1")
    page = [_fields(m, q) for m in found[start:start + max(limit, 1)]]
    headers = {}
    if start + len(page) < len(found):
        rest = [(k, v) for k, values in q.items() if k != "cursor" for v in values]
        headers["Link"] = f'<{base}/api/models?{urlencode([*rest, ("cursor", start + len(page))])}>; rel="next"'
    return 200, page, headers

"""Every failure as the error object of the API the route belongs to (OpenAI's by default; Ollama's
``{"error": "..."}`` on Ollama's routes; Anthropic's ``{"type": "error", "error": {type, message}}``
on the Messages routes), with the right HTTP status; never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from corral.errors import BusyError, CorralError

log = logging.getLogger("corral.api")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error", 431: "invalid_request_error",
         503: "service_unavailable", 507: "insufficient_storage"}


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


# Ollama's routes answer errors as Ollama does, so its clients show the message
OLLAMA_PATHS = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/tags", "/api/show",
                          "/api/pull", "/api/delete", "/api/copy", "/api/version"})


ANTHROPIC_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 413: "request_too_large", 422: "invalid_request_error",
                   429: "rate_limit_error", 503: "overloaded_error", 507: "overloaded_error"}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error object."""
    return {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}


def error_body_for(path: str, status: int, message: str, *, param: str | None = None,
                   code: str | None = None) -> dict[str, Any]:
    """The error object of the API ``path`` belongs to."""
    if path in OLLAMA_PATHS:
        return {"error": message}
    if path in ANTHROPIC_PATHS:
        return anthropic_error(status, message)
    return error_body(status, message, param=param, code=code)


def error_response(status: int, message: str, *, path: str = "", param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    if (path in OLLAMA_PATHS or path in ANTHROPIC_PATHS) and status == 422:
        status = 400  # both answer every invalid request 400
    return JSONResponse(error_body_for(path, status, message, param=param, code=code), status_code=status,
                        headers=headers)


def corral_error_response(exc: CorralError, path: str = "") -> JSONResponse:
    message = exc.message + (f" ({exc.hint})" if exc.hint else "")
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, BusyError) else None
    return error_response(exc.http_status, message, path=path, param=getattr(exc, "param", None),
                          code=type(exc).__name__, headers=headers)


def install(app: FastAPI) -> None:
    async def on_corral(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CorralError)
        return corral_error_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
        param = ".".join(loc) or None
        msg = str(first.get("msg", "invalid value"))
        path = request.url.path
        if first.get("type") == "json_invalid":
            return error_response(400, f"the request body is not valid JSON: {msg}", path=path, code="invalid_json")
        return error_response(400, f"invalid parameter {param}: {msg}" if param else msg, path=path, param=param,
                              code="invalid_parameter")

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), path=request.url.path)

    async def on_any(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}", path=request.url.path,
                              code="internal_error")

    app.add_exception_handler(CorralError, on_corral)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_any)

"""POST /v1/audio/transcriptions and /v1/audio/translations: the multipart form read (one file, its
text fields), then ``protocols.openai.audio`` does the rest; JSON or text as the format asks."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from corral.api.common import call_info, runtime_of
from corral.errors import MissingDependencyError, UsageError
from corral.protocols.openai.audio import SpeechForm, create_transcription
from corral.runtime.dispatcher import Door
from corral.wire import dumps

router = APIRouter()
TRANSCRIPTIONS, TRANSLATIONS = "/v1/audio/transcriptions", "/v1/audio/translations"
MAX_FIELD = 64 * 1024  # a text field (the prompt is the longest)


async def _read(request: Request, translate: bool) -> tuple[SpeechForm, bytes]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UsageError("send the audio as multipart/form-data with a file field", "the OpenAI SDK does this")
    try:
        async with request.form(max_files=1, max_fields=32, max_part_size=MAX_FIELD) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise UsageError("the form has no file field with the audio")
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            granularities = [v for v in form.getlist("timestamp_granularities[]") if isinstance(v, str)]
            return SpeechForm.parse(fields, granularities, translate=translate), await upload.read()
    except AssertionError:  # starlette without python-multipart
        raise MissingDependencyError("reading uploads needs the Python package 'python-multipart'",
                                     "install it with: pip install 'corral[audio]'") from None


async def _answer(request: Request, route: str, translate: bool) -> Response:
    form, data = await _read(request, translate)
    answer = await create_transcription(runtime_of(request), form, data, call_info(request, Door.OPENAI, route))
    body = answer.body if isinstance(answer.body, str) else dumps(answer.body)
    return Response(body, media_type=answer.media_type)


@router.post(TRANSCRIPTIONS, response_model=None)
async def transcriptions(request: Request) -> Response:
    return await _answer(request, TRANSCRIPTIONS, translate=False)


@router.post(TRANSLATIONS, response_model=None)
async def translations(request: Request) -> Response:
    return await _answer(request, TRANSLATIONS, translate=True)

"""The Hugging Face Hub account: log in and out through huggingface_hub's own token storage, and what a hub's
refusal (401 / 403) or a missing connection means for the user.

corral keeps no token: ``login`` checks a token with the hub's whoami at the endpoint in use (HF_ENDPOINT, read
now), then hands it to ``huggingface_hub.login`` (stored under HF_HOME, where every huggingface_hub call of
corral finds it: pulls of gated repos use it); ``logout`` is ``huggingface_hub.logout``. A token is never put in
a message. :func:`refusal` turns a hub's 401 / 403 into the next step to take (accept a gated repo's terms, log
in, a token without access); download.py and hub_search.py map their hub errors through it.
huggingface_hub freezes HF_ENDPOINT and HF_HUB_OFFLINE at import; both are read here from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import CorralError, DownloadError, OfflineError, UsageError

LOGIN = "log in with `corral login` (`hf auth login` and HF_TOKEN work too)"
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubAccessError(DownloadError):
    """The hub refuses this account (no token, a token without access, an invalid token): 403, and the CLI's
    exit code is 77 (sysexits' EX_NOPERM), so a script can tell it from a failed download."""

    http_status = 403
    exit_code = 77


def hub_endpoint(environ: Mapping[str, str] = os.environ) -> str | None:
    """HF_ENDPOINT as set now (None: huggingface_hub's default)."""
    return (environ.get("HF_ENDPOINT") or "").strip().rstrip("/") or None


def hub_site(endpoint: str | None) -> str:
    """The hub's web address: ``endpoint``, else huggingface_hub's (https://huggingface.co)."""
    if endpoint:
        return endpoint
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def offline_mode(environ: Mapping[str, str] = os.environ) -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, as huggingface_hub reads it."""
    value = environ.get("HF_HUB_OFFLINE") or environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE


def offline_error(doing: str) -> OfflineError:
    return OfflineError(f"offline mode is on (HF_HUB_OFFLINE=1): {doing} needs the Hugging Face Hub",
                        "unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to go online; models already pulled "
                        "still run offline")


def token_sent(exc: BaseException) -> bool:
    """Whether the request a huggingface_hub HTTP error answers carried a token."""
    response = getattr(exc, "response", None)
    try:
        return response is not None and "authorization" in response.request.headers
    except RuntimeError:  # an httpx response built without its request
        return False


def bad_token() -> HubAccessError:
    return HubAccessError("the hub refused your Hugging Face token (invalid, expired or revoked)",
                          "log in again with `corral login`, or `corral logout`; HF_TOKEN, when set, is used "
                          "instead of the stored token")


def refusal(status: int | None, *, gated: bool, sent: bool, what: str, page: str) -> HubAccessError | None:
    """What a hub's 401 / 403 about ``what`` (a repo, with its web ``page``) means and the next step; None for
    other statuses. ``gated``: the hub said GatedRepo; ``sent``: the request carried a token."""
    if status == 401 and gated:
        return HubAccessError(f"{what} is a gated repository: accept its terms at {page}, then {LOGIN}",
                              "corral pulls with the token huggingface_hub stores")
    if status == 403 and gated:
        return HubAccessError(
            f"your Hugging Face token has no access to the gated repository {what} yet: accept its terms at {page} "
            "(some authors approve each request), then pull again",
            "already accepted? log in with a token of that account (`corral login`); a fine-grained token "
            "also needs the permission to read public gated repos")
    if status == 401 and sent:
        return bad_token()
    if status == 401:
        return HubAccessError(f"{what} was not found, or it is private and needs a login",
                              f"check the name at {page}; if you have access, {LOGIN}")
    if status == 403:
        return HubAccessError(f"your Hugging Face token has no access to {what} (HTTP 403)",
                              "log in with a token that can read it: `corral login`")
    return None


def hub_failure(exc: Exception, doing: str, endpoint: str | None) -> CorralError:
    """A failed hub API call (search, whoami) as one clear error: offline, unreachable, refused, or HTTP N."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    site = hub_site(endpoint)
    if isinstance(exc, OfflineModeIsEnabled):
        return offline_error(doing)
    if isinstance(exc, httpx2.TransportError):
        return OfflineError(f"cannot reach the Hugging Face Hub at {site} for {doing} ({_one_line(exc)})",
                            "check the network connection (and HF_ENDPOINT or a proxy); models already pulled "
                            "still run offline")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 401 and token_sent(exc):  # the listing is public: only a bad token makes it refuse
            return bad_token()
        return DownloadError(f"{site} answered HTTP {status} to {doing}: {_one_line(exc)}")
    return DownloadError(f"{doing} failed: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class Login:
    user: str  # the account the token belongs to, as whoami names it
    endpoint: str  # the hub it was checked against
    stored_at: str  # huggingface_hub's token file
    env_token: bool  # HF_TOKEN is set: huggingface_hub uses it instead of the stored token


def whoami(token: str, endpoint: str | None) -> dict[str, Any]:
    """The hub's whoami for ``token``; a bad token is a HubAccessError, no connection an OfflineError."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return dict(HfApi(endpoint=endpoint).whoami(token=token))
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code == 401:
            raise HubAccessError(f"{hub_site(endpoint)} refused this token (invalid, expired or revoked)",
                                 f"create a read token at {hub_site(endpoint)}/settings/tokens") from None
        raise hub_failure(exc, "the token check", endpoint) from None
    except Exception as exc:
        raise hub_failure(exc, "the token check", endpoint) from None


def login(token: str, environ: Mapping[str, str] = os.environ) -> Login:
    """Check ``token`` against the hub in use, then store it with huggingface_hub (as `hf auth login` does)."""
    token = token.strip()
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise UsageError("that is not a Hugging Face token (empty, or with spaces or control characters)",
                         "paste a token from https://huggingface.co/settings/tokens")
    endpoint = hub_endpoint(environ)
    if offline_mode(environ):
        raise offline_error("logging in (the token is checked with the hub)")
    name = whoami(token, endpoint).get("name")
    if not isinstance(name, str) or not name:
        raise DownloadError(f"{hub_site(endpoint)} answered the token check without an account name")
    import huggingface_hub
    from huggingface_hub import constants

    try:
        huggingface_hub.login(token=token, add_to_git_credential=False)
    except ValueError as exc:  # an organization token, which huggingface_hub refuses
        raise UsageError(f"huggingface_hub refused to store this token: {_one_line(exc)}") from None
    except Exception as exc:
        raise hub_failure(exc, "storing the token", endpoint) from None
    env = bool(environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN"))
    return Login(name, hub_site(endpoint), str(constants.HF_TOKEN_PATH), env)


def logout() -> str | None:
    """Remove huggingface_hub's stored tokens; the token file it removed, or None when none was stored."""
    import contextlib

    import huggingface_hub
    from huggingface_hub import constants

    stored = [p for p in (Path(constants.HF_TOKEN_PATH), Path(constants.HF_STORED_TOKENS_PATH)) if p.exists()]
    if not stored:
        return None
    # OSError: a token is still set in the environment (said by the caller), or no git for the credential helper
    with contextlib.suppress(OSError):
        huggingface_hub.logout()
    left = [str(p) for p in stored if p.exists()]
    if left:
        raise CorralError(f"could not remove the stored token ({', '.join(left)})", "remove the file yourself")
    return str(stored[0])

"""Optional API-key auth for prediction routes and the admin token for /v1/admin/*."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from behaviorlm.service.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="the server's API key, when it has one")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="alternative header")
_admin = APIKeyHeader(name="X-Admin-Token", auto_error=False, description="admin token")


def _matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> None:
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    given = bearer.credentials if bearer is not None else api_key
    if not _matches(given, expected):
        raise ApiError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key'",
            field="Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def require_admin(request: Request, token: Annotated[str | None, Depends(_admin)]) -> None:
    expected = request.app.state.settings.admin_token
    if expected is None:
        raise ApiError(403, "admin routes are disabled: set BEHAVIORLM_ADMIN_TOKEN to enable")
    if not _matches(token, expected):
        raise ApiError(401, "missing or wrong X-Admin-Token", field="X-Admin-Token")

"""Map the brain's exceptions to JSON error responses."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from z4j_brain_plugin.errors import AuthError, NotFoundError, ValidationError


def error_body(message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"message": message, **details}}


async def validation_failed(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ValidationError)
    value = error.value if _is_json(error.value) else repr(error.value)
    return JSONResponse(error_body(error.message, field=error.field, value=value), status_code=422)


async def not_found(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(error_body(str(error)), status_code=404)


async def unauthorized(_request: Request, error: Exception) -> JSONResponse:
    status = 401 if "missing" in str(error) or "unknown" in str(error) else 403
    return JSONResponse(error_body(str(error)), status_code=status)


HANDLERS = {ValidationError: validation_failed, NotFoundError: not_found, AuthError: unauthorized}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True

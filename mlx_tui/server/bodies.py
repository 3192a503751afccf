"""Reading request bodies: JSON objects and their fields, each bad value a 400 naming the field."""

from __future__ import annotations

import json
from typing import Any, Mapping

from starlette.requests import Request

from .errors import bad_request

__all__ = ["json_body", "model_name", "flag", "number", "whole"]


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


def model_name(body: Mapping[str, Any]) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request('the body needs "model": the name of a model (GET /v1/models lists them)')
    return name


def flag(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be true or false, got {value!r}")
    return value


def number(body: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise bad_request(f"{key} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def whole(body: Mapping[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_request(f"{key} must be a whole number of at least {minimum}, got {value!r}")
    return value

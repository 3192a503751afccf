"""Reading request bodies: JSON objects and their fields, each bad value a 400 naming the field.

A body arrives here already checked for its type and size (:mod:`.security`). What is left is
its shape: JSON nested too deep, text that is not Unicode (a lone surrogate such as
``"\\ud800"``, which JSON allows and nothing downstream can encode), numbers beyond 64 bits,
model names no model can have. Each is a 400 here, before it can become a 500 further down.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Mapping, TypeVar

from starlette.requests import Request

from .errors import ApiError, bad_request

__all__ = ["MAX_MODEL_NAME", "MAX_WHOLE", "json_body", "model_name", "check_model_name", "flag",
           "number", "whole", "parsed"]

log = logging.getLogger("mlx_tui.server")

T = TypeVar("T")

MAX_MODEL_NAME = 1024
"""The longest model name a request may use (a Hugging Face id is at most 96 characters; a
folder path beyond this is longer than most systems allow)."""

MAX_WHOLE = 2**63 - 1
"""The largest whole number any field takes (a signed 64-bit integer, as OpenAI's ``seed``)."""

# A surrogate code point written as a JSON escape, or as the bytes Python's JSON reader decodes
# with "surrogatepass": only bodies that match are searched for lone ones.
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _lone_surrogate(value: Any) -> str | None:
    """The first string in ``value`` (keys included) that is not valid Unicode, or None.
    Iterative: a body may nest as deep as the JSON reader allows."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except RecursionError:
        raise bad_request("the body is JSON nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    if _SURROGATE.search(raw):
        bad = _lone_surrogate(body)
        if bad is not None:
            raise bad_request(f"the body has text that is not valid Unicode (a lone surrogate "
                              f"in {ascii(bad[:40])}); send UTF-8 text")
    return body


def check_model_name(name: str, where: str = "model") -> str:
    """``name`` if it can name a model; a 400 for what no model can be called (control
    characters, more than :data:`MAX_MODEL_NAME` characters, ``~user`` paths)."""
    if len(name) > MAX_MODEL_NAME:
        raise bad_request(f"{where} is {len(name):,} characters long; a model name has at most "
                          f"{MAX_MODEL_NAME:,} (GET /v1/models lists them)")
    if _CONTROL.search(name):
        raise bad_request(f"{where} {ascii(name[:60])} has a control character; "
                          "no model name has one")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{where} {ascii(name[:60])} is not valid Unicode") from None
    if name.startswith("~") and not (name == "~" or name.startswith("~/")):
        # Another user's home: the same answer whether or not that user exists.
        raise bad_request(f"{where} {name[:60]!r}: '~user' paths are not accepted; "
                          "use the model's name (GET /v1/models lists them)")
    return name


def model_name(body: Mapping[str, Any]) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request('the body needs "model": the name of a model (GET /v1/models lists them)')
    return check_model_name(name)


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


def whole(body: Mapping[str, Any], key: str, minimum: int, maximum: int = MAX_WHOLE) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        shown = f"{value!r}" if not isinstance(value, int) or value.bit_length() < 200 else "a larger one"
        raise bad_request(f"{key} must be a whole number from {minimum} to {maximum}, got {shown}")
    return value


def parsed(parse: Callable[[Mapping[str, Any]], T], body: Mapping[str, Any]) -> T:
    """``parse(body)``, where any failure is the body's fault: a 400.

    A parser names each bad field itself; a shape it did not foresee (a list where a string
    belongs) would otherwise end as a TypeError and a 500. It is logged, so the parser can
    learn to name it.
    """
    try:
        return parse(body)
    except ApiError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        log.warning("%s met a body shape it does not check (%s: %s); answered 400",
                    getattr(parse, "__qualname__", parse), type(exc).__name__, exc)
        raise bad_request(f"the body has a field of the wrong type or shape "
                          f"({type(exc).__name__}: {str(exc)[:200]}); the README lists the fields "
                          "and their types") from None

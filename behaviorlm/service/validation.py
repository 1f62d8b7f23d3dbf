"""Pydantic validation errors in the client's words: the field as they wrote it, the problem."""

from __future__ import annotations

from typing import Any


def validation_field(loc: tuple[Any, ...] | list[Any]) -> str:
    """'body.history.3.behavior' -> 'history[3].behavior' (the field as the client wrote it)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "body"


def describe_validation(errors: list[Any]) -> tuple[str, str]:
    """(message, field) for the first pydantic / FastAPI validation error."""
    first = errors[0]
    field = validation_field(first.get("loc", ()))
    msg = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{field}: {msg}{more}", field

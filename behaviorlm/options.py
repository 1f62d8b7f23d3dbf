"""One documented field per option: a dataclass field made with ``option(...)`` is the source of
a command's ``--help`` line, its config value and the name in error messages.

litgpt and vLLM generate their CLIs from dataclass fields the same way; the service does it
from pydantic ``Field`` descriptions (``behaviorlm/service/cli.py``). Here::

    @dataclass(frozen=True)
    class EvalConfig:
        seed: int = option(0, help="sample subset and SASRec seed")

    add_options(parser, EvalConfig)  # --seed SEED  sample subset and SASRec seed (default: 0)
    cfg = collect(args, EvalConfig)  # EvalConfig(seed=args.seed, ...)

Types come from the annotations: ``bool`` becomes a switch (``negate="--no-x"`` for one that
defaults to true), ``int`` / ``float`` / ``str`` / ``Path`` parse as such, ``X | None`` as X;
anything else (tuples of systems, taus) needs ``parse=`` (a function of the flag's text).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

_SCALARS: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str, Path: Path}


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
    negate: str | None = None,
    nargs: str | None = None,
    const: Any = None,
    action: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option (see the module docstring)."""
    metadata = {
        "help": help,
        "flag": flag,
        "parse": parse,
        "choices": tuple(choices) if choices is not None else None,
        "metavar": metavar,
        "negate": negate,
        "nargs": nargs,
        "const": const,
        "action": action,
    }
    if isinstance(default, list | dict | set):
        raise TypeError("option(): use a tuple (or None) as a mutable default")
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def dest_of(f: dataclasses.Field[Any]) -> str:
    return flag_of(f).lstrip("-").replace("-", "_")


def options_of(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def _scalar(annotation: Any) -> Any:
    """``X | None`` -> X; anything else unchanged."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _default_text(f: dataclasses.Field[Any]) -> str:
    value = default_of(f)
    if value is dataclasses.MISSING:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    skip: Collection[str] = (),
) -> None:
    """An argparse option per ``option`` field of ``cls`` (except ``skip``). Every option's
    parsed default is None, so ``collect`` can tell "not given" from a given value."""
    hints = typing.get_type_hints(cls)
    for f in options_of(cls):
        if f.name in skip:
            continue
        meta = f.metadata
        kind = _scalar(hints[f.name])
        help_text = f"{meta['help']} (default: {_default_text(f)})"
        kwargs: dict[str, Any] = {"dest": dest_of(f), "default": None, "help": help_text}
        if kind is bool and meta.get("action") is None:
            if meta.get("negate"):
                parser.add_argument(meta["negate"], action="store_false", **kwargs)
            else:
                parser.add_argument(flag_of(f), action="store_true", **kwargs)
            continue
        if meta.get("action"):
            kwargs["action"] = meta["action"]
        else:
            kwargs["type"] = meta.get("parse") or _SCALARS.get(kind)
            if kwargs["type"] is None:
                raise TypeError(f"option {f.name}: no parser for {kind!r}; give parse=")
        for key in ("choices", "metavar", "nargs", "const"):
            if meta.get(key) is not None:
                kwargs[key] = meta[key]
        parser.add_argument(flag_of(f), **kwargs)


def collect(args: argparse.Namespace, cls: type, **given: Any) -> Any:
    """``cls`` from the parsed options (those not given keep the field defaults) plus
    ``given`` (values that do not come from this class's own flags)."""
    values: dict[str, Any] = {}
    for f in options_of(cls):
        value = getattr(args, dest_of(f), None)
        if value is not None:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    values.update(given)
    return cls(**values)

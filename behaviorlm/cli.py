"""``behaviorlm``: one console script, one subcommand per job.

Each subcommand lives with the code it runs and exposes ``register(subparsers)``; this module
only wires them up, so ``behaviorlm --help`` stays fast (no torch import until a command runs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from behaviorlm import __version__
from behaviorlm.errors import BehaviorLMError


def _base_model() -> ModuleType:
    from behaviorlm import base_model_cli

    return base_model_cli


def _data() -> ModuleType:
    from behaviorlm.training.data import cli

    return cli


def _train() -> ModuleType:
    from behaviorlm.training import cli

    return cli


def _eval() -> ModuleType:
    from behaviorlm.training.evaluation import cli

    return cli


def _serve() -> ModuleType:
    from behaviorlm.service import cli

    return cli


# Each subcommand: its name, the extra that installs its dependencies (named when the extra is
# missing) and the import of the module that defines its register(subparsers). The imports run
# when the parser is built, so a command whose extra is missing fails alone, with a message.
COMMANDS: tuple[tuple[str, str, Callable[[], ModuleType]], ...] = (
    ("base-model", "engine", _base_model),
    ("data", "train", _data),
    ("train", "train", _train),
    ("eval", "train", _eval),
    ("serve", "serve", _serve),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="behaviorlm",
        description=(
            "Predict a user's next behavior with a two-stage LoRA-tuned small LLM "
            "(BehaviorLM). Subcommands prepare data, train adapters, evaluate them and "
            "serve predictions over HTTP."
        ),
    )
    parser.add_argument("--version", action="version", version=f"behaviorlm {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging and full tracebacks"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, _extra, load in COMMANDS:
        try:
            module = load()
        except ModuleNotFoundError as exc:
            # An optional extra (serve: pydantic-settings, fastapi...) is not installed: the
            # other commands still work, and this one says what to install.
            _register_missing(sub, command, exc.name or str(exc))
            continue
        module.register(sub)
    return parser


def _missing_extra_message(command: str, missing: str) -> str:
    extra = next((e for name, e, _ in COMMANDS if name == command), "train")
    if command == "serve" and missing.split(".")[0] in _ENGINE_MODULES:
        extra = "engine"  # the transformers engine of the service
    return (
        f"`behaviorlm {command}` needs the '{extra}' extra (module {missing!r} is not "
        f"installed): pip install 'behaviorlm[{extra}]'"
    )


# top-level modules of the `engine` extra
_ENGINE_MODULES = frozenset({"torch", "transformers", "peft", "accelerate", "safetensors", "gguf"})


def _register_missing(sub: Any, command: str, missing: str) -> None:
    message = _missing_extra_message(command, missing)
    # No option prefix: whatever options follow are swallowed, and the error below is shown.
    parser = sub.add_parser(
        command, help=f"(unavailable: {missing} not installed)", prefix_chars="\0", add_help=False
    )
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)

    def fail(_args: argparse.Namespace) -> int:
        raise BehaviorLMError(message)

    parser.set_defaults(func=fail)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        # The commands import their heavy dependencies when they run (a fast --help), so a
        # missing extra shows here: name it instead of a traceback.
        if args.verbose or not exc.name or exc.name.split(".")[0] == "behaviorlm":
            raise
        print(f"error: {_missing_extra_message(args.command, exc.name)}", file=sys.stderr)
        return 2
    except BehaviorLMError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

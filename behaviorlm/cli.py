"""``behaviorlm``: one console script, one subcommand per job.

Each subcommand lives with the code it runs and exposes ``register(subparsers)``; this module
only wires them up, so ``behaviorlm --help`` stays fast (no torch import until a command runs).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from behaviorlm import __version__
from behaviorlm.errors import BehaviorLMError

# Modules that each define register(subparsers) for one subcommand: the command's name and
# the extra that installs its dependencies (named when the extra is missing).
COMMANDS: dict[str, tuple[str, str]] = {
    "behaviorlm.base_model_cli": ("base-model", "train"),
    "training.data.cli": ("data", "train"),
    "training.cli": ("train", "train"),
    "training.evaluation.cli": ("eval", "train"),
    "service.cli": ("serve", "serve"),
}


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
    for module in COMMANDS:
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:
            # An optional extra (serve: pydantic-settings, fastapi...) is not installed: the
            # other commands still work, and this one says what to install.
            _register_missing(sub, *COMMANDS[module], exc.name or str(exc))
    return parser


def _register_missing(sub: Any, command: str, extra: str, missing: str) -> None:
    message = (
        f"`behaviorlm {command}` needs the '{extra}' extra (module {missing!r} is not "
        f"installed): pip install 'behaviorlm[{extra}]'"
    )
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

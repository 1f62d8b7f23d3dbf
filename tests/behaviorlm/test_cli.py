"""The ``behaviorlm`` console script's wiring."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from behaviorlm import cli


def test_every_command_is_registered() -> None:
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"base-model", "data", "train", "eval", "serve"} <= set(choices)


def test_a_missing_extra_disables_only_its_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A training-only install (no pydantic-settings) still trains; `serve` says what to add."""
    real = importlib.import_module

    def without_serve(name: str, *args: Any) -> Any:
        if name == "service.cli":
            raise ModuleNotFoundError(
                "No module named 'pydantic_settings'", name="pydantic_settings"
            )
        return real(name, *args)

    monkeypatch.setattr(cli.importlib, "import_module", without_serve)
    assert cli.main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "pydantic_settings" in err and "behaviorlm[serve]" in err
    parser = cli.build_parser()
    assert parser.parse_args(["train", "--data", "x"]).command == "train"

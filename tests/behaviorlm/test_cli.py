"""The ``behaviorlm`` console script's wiring."""

from __future__ import annotations

import sys

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
    # As in an environment without the extra: the import of pydantic_settings fails, and
    # nothing of the service is imported yet.
    monkeypatch.setitem(sys.modules, "pydantic_settings", None)
    for name in [m for m in sys.modules if m.startswith("behaviorlm.service")]:
        monkeypatch.delitem(sys.modules, name)
    assert cli.main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "pydantic_settings" in err and "behaviorlm[serve]" in err
    parser = cli.build_parser()
    assert parser.parse_args(["train", "--data", "x"]).command == "train"

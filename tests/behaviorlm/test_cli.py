"""The ``behaviorlm`` console script's wiring."""

from __future__ import annotations

import sys
from pathlib import Path

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


def test_a_missing_extra_at_run_time_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Commands import their heavy dependencies when they run: a core-only install that runs
    `data prepare` gets the extra to install (DuckDB comes with 'train'), not a traceback."""
    monkeypatch.setitem(sys.modules, "duckdb", None)
    for name in [m for m in sys.modules if m.startswith("behaviorlm.training.data.")]:
        if not name.endswith((".cli", ".config")):
            monkeypatch.delitem(sys.modules, name)
    log = tmp_path / "log.csv"
    log.write_text("user_id,timestamp,behavior\nu,2024-01-01T00:00:00,a\n")
    argv = ["data", "prepare", "--input", str(log), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "'duckdb'" in err and "pip install 'behaviorlm[train]'" in err
    assert "Traceback" not in err


def test_serving_without_the_engine_extra_names_engine() -> None:
    message = cli._missing_extra_message("serve", "torch")
    assert "pip install 'behaviorlm[engine]'" in message
    assert "behaviorlm[serve]" in cli._missing_extra_message("serve", "fastapi")

"""``behaviorlm train``: help text and clear errors without tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from behaviorlm.cli import main


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--strategy",
        "--data",
        "--preset",
        "--base-model",
        "--out",
        "--resume",
        "--stage1-from",
        "natural_fraction",
        "KEY=VALUE",
        "stage1.steps",
        "torchrun",
    ):
        assert option in out


def test_bad_override_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--data", str(tmp_path), "--preset", "tiny", "stage1.steps=zero"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: config 'stage1.steps='zero'': must be an integer")
    assert "Traceback" not in err


def test_not_a_prepared_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", str(tmp_path), "--preset", "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and "not a prepared dataset" in err

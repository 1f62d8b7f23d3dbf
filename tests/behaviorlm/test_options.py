"""behaviorlm/options.py: one field -> the --help line, the config value, the parsed type."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from behaviorlm.options import add_options, collect, flag_of, option, options_of


@dataclass(frozen=True)
class Demo:
    data: Path = option(help="where the data is")
    steps: int = option(10, help="how many steps")
    rate: float | None = option(None, help="learning rate")
    names: tuple[str, ...] = option(("a",), parse=lambda t: tuple(t.split(",")), help="names")
    mode: str = option("x", choices=("x", "y"), help="mode")
    calibrate: bool = option(True, negate="--no-calibrate", help="fit a temperature")
    verbose: bool = option(False, help="say more")
    plain: int = 3  # not an option


def _parse(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser()
    add_options(p, Demo)
    return p, p.parse_args(argv)


def test_defaults_survive_when_flags_are_not_given() -> None:
    _, args = _parse(["--data", "d"])
    assert collect(args, Demo) == Demo(data=Path("d"))


def test_given_flags_are_parsed_by_type() -> None:
    _, args = _parse(
        [
            *("--data", "d", "--steps", "5", "--rate", "0.1", "--names", "p,q"),
            *("--mode", "y", "--no-calibrate", "--verbose"),
        ]
    )
    cfg = collect(args, Demo, plain=4)
    assert cfg == Demo(Path("d"), 5, 0.1, ("p", "q"), "y", False, True, 4)


def test_help_is_the_field_help_with_its_default() -> None:
    p, _ = _parse(["--data", "d"])
    text = " ".join(p.format_help().split())
    assert "--steps STEPS how many steps (default: 10)" in text
    assert "--data DATA where the data is (default: required)" in text
    assert "--no-calibrate fit a temperature (default: True)" in text
    assert "--plain" not in text
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "z"])


def test_mutable_defaults_are_refused() -> None:
    with pytest.raises(TypeError, match="tuple"):
        option([], help="x")


@pytest.mark.parametrize("command", ["eval"])
def test_every_config_field_is_a_documented_flag(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The eval command's --help is generated from EvalConfig and FewShotConfig."""
    from behaviorlm.cli import main
    from behaviorlm.training.evaluation.evaluate import EvalConfig
    from behaviorlm.training.evaluation.fewshot import FewShotConfig

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for cls in (EvalConfig, FewShotConfig):
        for f in options_of(cls):
            assert (f.metadata.get("negate") or flag_of(f)) in text, f.name
    assert {f.name for f in dataclasses.fields(EvalConfig)} == {
        f.name for f in options_of(EvalConfig)
    }

"""Training config: presets load, overrides apply, bad values name the flag."""

from __future__ import annotations

import pytest

from behaviorlm.errors import InputError
from behaviorlm.training.config import STRATEGIES, TrainConfig, config_from_dict, load_config


@pytest.mark.parametrize("preset", ["tiny", "cpu", "gpu"])
def test_presets_load_and_round_trip(preset: str) -> None:
    import yaml

    config = load_config(preset)
    assert isinstance(config, TrainConfig)
    assert config_from_dict(yaml.safe_load(config.to_yaml())) == config


def test_overrides_apply_to_nested_sections() -> None:
    config = load_config(
        "cpu", ["stage1.steps=17", "lora.target_modules=[q_proj,k_proj]", "subset.hard_fraction=0"]
    )
    assert config.stage1.steps == 17
    assert config.lora.target_modules == ("q_proj", "k_proj")
    assert config.subset.hard_fraction == 0.0
    # untouched keys of the same section keep the preset's values
    assert config.stage1.kl_weight == load_config("cpu").stage1.kl_weight


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("stage1.stepz=3", "stage1.stepz"),
        ("stage2.steps=0", "stage2.steps"),
        ("subset.hard_fraction=1.5", "subset.hard_fraction"),
        ("subset.natural_fraction=1", "subset.natural_fraction"),
        ("lora.r=abc", "lora.r"),
        ("dtype=float16", "dtype"),
        ("lora.target_modules=[lm_head]", "lora.target_modules"),
        ("stage1.kl_weight=-1", "stage1.kl_weight"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_values_name_the_flag(override: str, named: str) -> None:
    with pytest.raises(InputError, match=named.replace(".", r"\.")):
        load_config("tiny", [override])


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(InputError, match="tiny"):
        load_config("nope")


def test_strategies() -> None:
    assert STRATEGIES == ("behaviorlm", "sft", "balanced")


def test_every_config_key_is_documented_in_train_help(capsys: pytest.CaptureFixture[str]) -> None:
    """train --help lists every key of TrainConfig, made from the fields' own help."""
    import dataclasses

    from behaviorlm.cli import main
    from behaviorlm.training.config import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
        value = getattr(TrainConfig(), f.name)
        keys = (
            [f"{f.name}.{g.name}" for g in dataclasses.fields(value)]
            if dataclasses.is_dataclass(value)
            else [f.name]
        )
        for key in keys:
            assert f"  {key} (" in text, key


def test_config_differences_name_each_key_as_an_override() -> None:
    """A refused --resume names every differing key as the key=value that would match."""
    from behaviorlm.training.config import config_differences

    saved = load_config("cpu", ["dtype=float32", "seed=1"]).to_dict()
    ours = load_config("cpu", ["dtype=bfloat16", "seed=1", "stage2.logit_adjust_tau=0"])
    assert config_differences(saved, saved) == []
    assert config_differences(saved, ours.to_dict()) == [
        "dtype='bfloat16' (saved: 'float32')",
        "stage2.logit_adjust_tau=0.0 (saved: 0.2)",
    ]

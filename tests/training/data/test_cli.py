"""`behaviorlm data prepare|stats` end to end on small files."""

from __future__ import annotations

from pathlib import Path

import pytest

from behaviorlm.cli import main
from behaviorlm.training.data.dataset import PreparedDataset
from behaviorlm.training.data.synthetic import make_synthetic_log


@pytest.fixture()
def log_csv(tmp_path: Path) -> Path:
    path = tmp_path / "log.csv"
    log = make_synthetic_log(40, 2000, 30, seed=0, tz_offset="+08:00")
    log.rename(columns={"user_id": "uid", "behavior": "app"}).to_csv(path, index=False)
    return path


def test_prepare_and_stats(
    log_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prepared"
    config = tmp_path / "preset.yaml"
    config.write_text("history_len: 5\nmin_count: 3\n")
    rc = main(
        [
            "data",
            "prepare",
            "--input",
            str(log_csv),
            "--out",
            str(out),
            "--user-col",
            "uid",
            "--behavior-col",
            "app",
            "--context-cols",
            "place",
            "--parent-col",
            "category",
            "--config",
            str(config),
            "--min-count",
            "20",
            "--fallback",
            "other",
            "--max-vocab",
            "12",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"-> {out}" in printed and "samples: train" in printed
    ds = PreparedDataset.load(out)
    assert ds.info["config"]["history_len"] == 5  # from the YAML
    assert ds.info["config"]["min_count"] == 20  # the flag wins
    assert len(ds.vocabulary) <= 12 and "other" in ds.vocabulary
    s = ds.samples("test")[0]
    assert len(s.history) == 5 and s.now is not None and s.now.utcoffset() is not None
    assert {"place"} == set(s.now_context)
    assert main(["data", "stats", str(out)]) == 0
    assert "## Vocabulary" in capsys.readouterr().out


def test_errors_are_one_line(
    log_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x"
    rc = main(["data", "prepare", "--input", str(log_csv), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    last = err.strip().split("\r")[-1]  # after the progress bar's carriage returns
    assert last.startswith("error: ") and "'user_id' (--user-col)" in last
    assert "available columns: ['uid', 'timestamp', 'app', 'category', 'place']" in err
    assert "Traceback" not in err
    rc = main(
        [
            "data",
            "prepare",
            "--input",
            str(log_csv),
            "--out",
            str(out),
            "--user-col",
            "uid",
            "--behavior-col",
            "app",
            "--ratios",
            "0.5,0.5",
        ]
    )
    assert rc == 2 and "--ratios: expected three numbers" in capsys.readouterr().err
    rc = main(
        [
            "data",
            "prepare",
            "--input",
            str(log_csv),
            "--out",
            str(out),
            "--user-col",
            "uid",
            "--behavior-col",
            "app",
            "--anchor-share",
            "2",
        ]
    )
    assert rc == 2 and "--anchor-share: must be in [0, 1)" in capsys.readouterr().err
    rc = main(["data", "stats", str(tmp_path)])
    assert rc == 2 and "not a prepared dataset" in capsys.readouterr().err
    rc = main(
        [
            "data",
            "prepare",
            "--format",
            "smartthings",
            "--input",
            str(tmp_path),
            "--out",
            str(out),
            "--split",
            "leave-one-out",
            "--no-chain",
        ]
    )
    assert rc == 2 and "only --split dataset" in capsys.readouterr().err


def test_presets_load_and_validate(tmp_path: Path) -> None:
    from behaviorlm.training.data.config import PrepareConfig, load_config_file, presets

    assert {"default", "compact"} <= set(presets())
    assert PrepareConfig.from_mapping(load_config_file(Path("default"))) == PrepareConfig()
    assert PrepareConfig.from_mapping(load_config_file(Path("compact"))).max_vocab == 40
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_cuont: 3\n")
    with pytest.raises(Exception, match=r"unknown option\(s\) \['min_cuont'\]"):
        PrepareConfig.from_mapping(load_config_file(bad), where=str(bad))
    with pytest.raises(Exception, match="neither a file nor a preset"):
        load_config_file(tmp_path / "nope.yaml")

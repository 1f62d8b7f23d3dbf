"""Service settings from the environment, adapter discovery and the default adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behaviorlm.errors import InputError
from behaviorlm.manifest import MANIFEST_FILE
from behaviorlm.service.adapters import discover_adapters, pick_default, resolve_inside
from behaviorlm.service.settings import ServiceSettings, load_settings


def test_settings_from_env_with_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEHAVIORLM_ENGINE", "vllm")
    monkeypatch.setenv("BEHAVIORLM_PORT", "9001")
    monkeypatch.setenv("BEHAVIORLM_ADAPTERS", "demo, ct-pj-demo/stage2 ,x=runs/a")
    monkeypatch.setenv("BEHAVIORLM_LOG_LEVEL", "DEBUG")
    s = load_settings(port=9100, host=None)
    assert s.engine == "vllm" and s.port == 9100 and s.host == "127.0.0.1"
    assert s.adapters == ["demo", "ct-pj-demo/stage2", "x=runs/a"]
    assert s.log_level == "debug"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"BEHAVIORLM_ENGINE": "tensorrt"}, "BEHAVIORLM_ENGINE"),
        ({"BEHAVIORLM_PORT": "-1"}, "BEHAVIORLM_PORT"),
        ({"BEHAVIORLM_MAX_QUEUE": "4"}, "max_queue (4) must be >= max_batch_items (64)"),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(InputError, match="invalid service settings") as info:
        load_settings()
    assert needle in str(info.value)


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="extra"):
        ServiceSettings(engnie="vllm")


def _adapter(root: Path, rel: str) -> None:
    (root / rel).mkdir(parents=True)
    (root / rel / MANIFEST_FILE).write_text(json.dumps({"schema_version": 1}))


def test_discovery_finds_one_and_two_level_adapters(tmp_path: Path) -> None:
    for rel in ("demo", "ct-pj-demo/stage1", "ct-pj-demo/stage2", "deep/a/b/c"):
        _adapter(tmp_path, rel)
    (tmp_path / "not-an-adapter").mkdir()
    found = discover_adapters(tmp_path, [])
    assert sorted(found) == ["ct-pj-demo/stage1", "ct-pj-demo/stage2", "demo"]
    assert pick_default(list(found), None) == "demo"
    assert pick_default(["ct-pj-demo/stage1", "ct-pj-demo/stage2"], None) == "ct-pj-demo/stage2"
    assert pick_default(["b", "a"], None) == "a"
    assert pick_default(list(found), "ct-pj-demo/stage1") == "ct-pj-demo/stage1"
    with pytest.raises(InputError, match="BEHAVIORLM_DEFAULT_ADAPTER: 'nope' is not loaded"):
        pick_default(list(found), "nope")


def test_explicit_adapters_and_paths(tmp_path: Path) -> None:
    _adapter(tmp_path, "runs/x/stage2")
    found = discover_adapters(tmp_path, ["best=runs/x/stage2", "runs/x/stage2"])
    assert found == {
        "best": tmp_path / "runs/x/stage2",
        "runs/x/stage2": tmp_path / "runs/x/stage2",
    }
    with pytest.raises(InputError, match=r"BEHAVIORLM_ADAPTERS: 'missing': no manifest\.json"):
        discover_adapters(tmp_path, ["missing"])
    with pytest.raises(InputError, match="outside the models directory"):
        resolve_inside(tmp_path, "../elsewhere")
    with pytest.raises(InputError, match="outside the models directory"):
        resolve_inside(tmp_path, "/etc")
    assert resolve_inside(tmp_path, str(tmp_path / "runs")) == (tmp_path / "runs").resolve()
    with pytest.raises(InputError, match="BEHAVIORLM_MODELS_DIR"):
        discover_adapters(tmp_path / "none", [])


def test_serve_options_map_to_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from behaviorlm.cli import build_parser
    from behaviorlm.service.cli import settings_flags
    from behaviorlm.service.settings import ServiceSettings

    parser = build_parser()
    args = parser.parse_args(
        [
            "serve",
            "--engine",
            "transformers",
            "--port",
            "0",
            "--adapter",
            "a",
            "--adapter",
            "b=runs/b",
            "--merge-adapter",
            "--batch-max-wait-ms",
            "2.5",
        ]
    )
    flags = settings_flags()
    s = load_settings(**{field: getattr(args, field) for field in flags})
    assert (s.engine, s.port, s.adapters, s.merge_adapter, s.batch_max_wait_ms) == (
        "transformers",
        0,
        ["a", "b=runs/b"],
        True,
        2.5,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--help"])
    help_text = capsys.readouterr().out
    # every setting has its flag, generated from the field, except the secrets (env only)
    assert set(flags) == set(ServiceSettings.model_fields) - {"api_key", "admin_token"}
    for field, (flag, _) in flags.items():
        assert flag in help_text and f"BEHAVIORLM_{field.upper()}" in help_text
    assert "--api-key" not in help_text and "--admin-token" not in help_text

import json
import re
import subprocess
import sys

from behaviorlm.base_model import resolve_base_model, weights_sha256


def test_tiny_model_resolves_from_its_directory(tiny_model) -> None:
    resolved = resolve_base_model(str(tiny_model.path))
    assert resolved.sha256 == tiny_model.sha256 == weights_sha256(tiny_model.path)
    assert resolved.ref.id == "tiny-random-llama"


def test_plain_hf_directory_gets_a_content_hash(tmp_path, tiny_model) -> None:
    # A user's own model directory (no BehaviorLM info file): id is the path, hash the weights.
    for f in tiny_model.path.iterdir():
        if f.name != "behaviorlm-base.json":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    resolved = resolve_base_model(str(tmp_path))
    assert resolved.sha256 == tiny_model.sha256
    assert resolved.id == str(tmp_path.resolve())


def test_shared_package_imports_without_torch() -> None:
    code = (
        "import sys, behaviorlm.prompt, behaviorlm.vocabulary, behaviorlm.manifest, "
        "behaviorlm.labels, behaviorlm.scoring, behaviorlm.cli; "
        "heavy = ('torch', 'vllm', 'transformers'); "
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_cli_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "behaviorlm.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for command in ("base-model", "data", "train", "eval", "serve"):
        # the subcommand table, not the description, must list it
        assert re.search(rf"^\s{{4}}{command}\s", out.stdout, re.MULTILINE), command

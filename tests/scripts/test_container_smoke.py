"""scripts/container-smoke.sh end to end: builds the CPU image and smoke-tests it (minutes).
Skips, saying why, where no container engine is installed (the script itself would install
podman on a root Debian machine; the suite never installs system packages)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from behaviorlm.manifest import MANIFEST_FILE

ROOT = Path(__file__).resolve().parents[2]


def _working_engine() -> str | None:
    """docker when its daemon answers (a `docker` client alone is not enough), else podman."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return "docker"
    return "podman" if shutil.which("podman") else None


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_container_smoke_script_passes() -> None:
    engine = _working_engine()
    if engine is None:
        pytest.skip("no working container engine (a docker daemon, or podman) here")
    if not (ROOT / "models" / "ct-pj-demo" / "stage2" / MANIFEST_FILE).exists():
        pytest.skip("models/ct-pj-demo/stage2 (the embedded demo adapter) is missing")
    env = {**os.environ, "ENGINE": engine, "NO_INSTALL": "1", "PORT": "8041"}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "container-smoke.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "container smoke: PASS" in out
    for figure in ("image size", "time to ready", "SIGTERM drain"):
        assert figure in out

"""deploy/k8s: every manifest validates against the Kubernetes schema (kubernetes-validate, no
cluster), and agrees with the service it deploys: probe paths are the app's health routes,
env vars are real settings, the grace period covers the service's shutdown grace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.32"  # oldest release with the preStop sleep action in the stable schema
MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _deployments() -> list[dict[str, Any]]:
    return [d for p in MANIFESTS for d in _docs(p) if d["kind"] == "Deployment"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_validates_strictly(path: Path) -> None:
    for doc in _docs(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_each_variant_lists_every_manifest_in_its_kustomization() -> None:
    for variant in ("cpu", "gpu"):
        listed = yaml.safe_load((DEPLOY / variant / "kustomization.yaml").read_text())
        files = {p.name for p in (DEPLOY / variant).glob("*.yaml")} - {"kustomization.yaml"}
        assert set(listed["resources"]) == files, variant


def test_deployments_match_the_service() -> None:
    from behaviorlm.service.app import create_app
    from behaviorlm.service.settings import ServiceSettings

    routes = {getattr(r, "path", None) for r in create_app(ServiceSettings()).routes}
    fields = {f"BEHAVIORLM_{name.upper()}" for name in ServiceSettings.model_fields}
    deployments = _deployments()
    assert {d["metadata"]["name"] for d in deployments} == {"behaviorlm-cpu", "behaviorlm-gpu"}
    for dep in deployments:
        pod = dep["spec"]["template"]
        container = pod["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] in routes, probe
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        env = {e["name"]: e.get("value") for e in container["env"]}
        unknown = {k for k in env if k.startswith("BEHAVIORLM_")} - fields
        assert not unknown, unknown
        given = {k.removeprefix("BEHAVIORLM_").lower(): v for k, v in env.items() if v}
        settings = ServiceSettings(
            **{k: v for k, v in given.items() if f"BEHAVIORLM_{k.upper()}" in fields}
        )
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["spec"]["terminationGracePeriodSeconds"] > settings.shutdown_grace_s + pre_stop
        assert container["ports"][0]["containerPort"] == settings.port
        assert pod["metadata"]["annotations"]["prometheus.io/path"] in routes
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the images' user
        assert container["resources"]["requests"]["memory"]


def test_the_validator_catches_a_typo() -> None:
    """Guard against a validator that accepts anything: a misspelt probe field must fail."""
    dep = _deployments()[0]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["periodSecond"] = container["readinessProbe"].pop("periodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)

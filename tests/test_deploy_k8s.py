"""deploy/k8s/: the Kubernetes example of several receivers (docs/scale.md).

Checked three ways, none needing a cluster: the Kubernetes schemas (the
``kubernetes-validate`` package, which ships them: offline; the ServiceMonitor is
a CRD it has no schema for), the wiring between the objects (ports, probe paths,
selectors, the claim), and the container's command line, which is started for
real here (``dicom-repack listen`` with the manifest's options, its folders moved
under a temporary one): an option the receiver does not know fails the test.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from helpers import run_cli
from test_listen_support import free_port, listening

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"


def _docs() -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in _docs() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


def _container() -> dict[str, Any]:
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _options(args: list[str]) -> dict[str, str]:
    """``--name=value`` (or a bare ``--flag``) -> value."""
    out = {}
    for arg in args:
        assert arg.startswith("--"), arg  # one word each: the test below rewrites them
        name, _, value = arg.partition("=")
        out[name] = value
    return out


def test_the_manifests_hold_the_objects_of_several_receivers() -> None:
    kinds = sorted(d["kind"] for d in _docs())
    assert kinds == [
        "Deployment",
        "PersistentVolumeClaim",
        "Service",
        "Service",
        "ServiceMonitor",
    ]
    deployment = _one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"] == deployment["spec"]["selector"]["matchLabels"]


def test_ports_probes_and_selectors_are_wired() -> None:
    container = _container()
    args = container["args"]
    assert args[:2] == ["dicom-repack", "listen"]
    opts = _options(args[2:])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"dicom": 11112, "http": int(opts["--http"].rsplit(":", 1)[1])}
    assert int(opts["--port"]) == 11112
    assert opts["--http"].startswith("0.0.0.0:")  # reachable by the kubelet and Prometheus
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    resources = container["resources"]
    assert resources["requests"]["memory"] and resources["limits"]["memory"]
    assert resources["requests"]["cpu"] and resources["limits"]["cpu"]
    pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    dicom = _one("Service", "dicom-repack")
    assert dicom["spec"]["selector"] == pod_labels
    assert dicom["spec"]["ports"] == [
        {"name": "dicom", "port": 11112, "targetPort": "dicom", "protocol": "TCP"}
    ]
    http = _one("Service", "dicom-repack-http")
    assert http["spec"]["selector"] == pod_labels
    assert [p["targetPort"] for p in http["spec"]["ports"]] == ["http"]
    monitor = _one("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == http["metadata"]["labels"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == http["spec"]["ports"][0]["name"]
    claim = _one("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = _one("Deployment")["spec"]["template"]["spec"]["volumes"]
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
    ]
    assert claims == [claim["metadata"]["name"]]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for folder in ("--datadir", "--logdir", "--index"):
        assert any(opts[folder].startswith(m + "/") for m in mounts), folder
    env = {e["name"] for e in container["env"]}
    assert "DICOM_REPACK_LISTEN_HOST_ID" in env  # each replica its own --host-id


def test_the_container_command_line_is_a_real_receiver(tmp_path: Path) -> None:
    """Every option and variable the manifest sets is one ``listen`` declares, and the
    receiver starts with them (folders under tmp_path, loopback ports) and is healthy."""
    container = _container()
    helped = run_cli("listen", "--help").stdout
    opts = _options(container["args"][2:])
    for name in opts:
        assert name in helped, name
    for env in container["env"]:
        assert env["name"] in helped, env["name"]  # each option's "[env: NAME]"
    http = free_port()
    moved = {
        "--datadir": None,  # listening() gives it
        "--port": None,
        "--http": f"127.0.0.1:{http}",
        "--logdir": str(tmp_path / "pacs" / "log"),
        "--index": str(tmp_path / "index" / "dicom-repack-index.sqlite"),
    }
    argv = []
    for name, given in opts.items():
        value = moved.get(name, given)
        if value is None:
            continue
        argv.append(f"{name}={value}" if value else name)
    (tmp_path / "index").mkdir()
    env_host = {"DICOM_REPACK_LISTEN_HOST_ID": "dicom-repack-listen-0"}
    with listening(tmp_path / "pacs" / "data", *argv, env={**os.environ, **env_host}):
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/status", timeout=10) as resp:
            assert json.loads(resp.read())["host"] == "dicom-repack-listen-0"


def test_the_kubernetes_schemas_accept_the_manifests() -> None:
    validator = pytest.importorskip("kubernetes_validate")
    checked = 0
    for doc in _docs():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD (Prometheus Operator): no schema ships for it
        validator.validate(doc, validator.latest_version(), strict=True)
        checked += 1
    assert checked == 4

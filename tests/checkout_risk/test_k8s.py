"""The rendered manifests: they parse, validate against KubeRay's CRDs and Kubernetes'
schemas offline, carry the capacity plan and the serve config, and stay in sync."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from checkout_risk import k8s
from checkout_risk.capacity import load_capacity, plan, side_cpus
from checkout_risk.cli import main
from serve_graph.config import regions

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CRDS = ROOT.parent / "shared" / "kuberay-crds"
KUBERNETES_VERSION = "1.31.0"  # the oldest version our clusters run
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayService": "ray.io_rayservices.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs.append((str(path.relative_to(K8S)), doc))
    return docs


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected, as `kubectl apply --validate=strict`
    does (the API server would otherwise prune a misspelt field silently)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _crd_spec_schema(kind: str) -> dict[str, Any]:
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRDS}: CRD validation skipped")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes
    crd = yaml.load((CRDS / CRD_FILES[kind]).read_text(), Loader=loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def _validate_crd(kind: str, spec: dict[str, Any]) -> None:
    jsonschema.validate(spec, _crd_spec_schema(kind))


def test_every_manifest_parses_and_names_its_kind() -> None:
    docs = _documents()
    assert {d["kind"] for _, d in docs} >= {
        "RayService",
        "RayCronJob",
        "CronJob",
        "PodDisruptionBudget",
        "StatefulSet",
        "Service",
        "Deployment",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Kustomization",
    }
    for path, doc in docs:
        assert doc["apiVersion"], path
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"] and doc["metadata"]["namespace"], path


def test_one_region_folder_per_region_config() -> None:
    assert {p.name for p in K8S.iterdir() if p.is_dir()} == {r.name for r in regions()}
    assert {"us-east", "eu-west", "ap-southeast"} <= {r.name for r in regions()}


@pytest.mark.parametrize("kind", ["RayService", "RayCronJob"])
def test_kuberay_resources_validate_against_their_crds(kind: str) -> None:
    found = [(p, d) for p, d in _documents() if d["kind"] == kind]
    assert found
    for _path, doc in found:
        _validate_crd(kind, doc["spec"])
        # the cluster inside, against the RayCluster CRD itself
        if kind == "RayService":
            _validate_crd("RayCluster", doc["spec"]["rayClusterConfig"])
        else:
            _validate_crd("RayJob", doc["spec"]["jobTemplate"])
            _validate_crd("RayCluster", doc["spec"]["jobTemplate"]["rayClusterSpec"])


def test_crd_validation_rejects_a_misspelt_field() -> None:
    (doc,) = [d for p, d in _documents() if p == "us-east/rayservice.yaml"]
    broken = copy.deepcopy(doc["spec"]["rayClusterConfig"])
    broken["workerGroupSpecs"][0]["maxReplica"] = broken["workerGroupSpecs"][0].pop("maxReplicas")
    with pytest.raises(jsonschema.ValidationError):
        _validate_crd("RayCluster", broken)
    wrong_type = copy.deepcopy(doc["spec"]["rayClusterConfig"])
    wrong_type["enableInTreeAutoscaling"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        _validate_crd("RayCluster", wrong_type)


def test_core_resources_validate_against_kubernetes_schemas() -> None:
    core = [(p, d) for p, d in _documents() if not d["apiVersion"].startswith(("ray.io", "kust"))]
    assert len(core) >= 20
    for path, doc in core:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{path} {doc['kind']}: {exc}") from exc
    (pdb,) = [d for p, d in core if p == "us-east/disruption.yaml"][:1]
    pdb = copy.deepcopy(pdb)
    pdb["spec"]["maxUnavailible"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pdb, KUBERNETES_VERSION, strict=True)


def test_serve_config_is_the_local_application_sized_by_the_plan() -> None:
    local = yaml.safe_load((ROOT / "configs" / "serve" / "local.yaml").read_text())
    local_apps = {a["args"]["region"]: a for a in local["applications"]}
    plans = plan(load_capacity())
    for region in regions():
        (doc,) = [d for p, d in _documents() if p == f"{region.name}/rayservice.yaml"]
        served = yaml.safe_load(doc["spec"]["serveConfigV2"])
        (app,) = served["applications"]
        source = local_apps.get(region.name, local["applications"][0])
        assert app["import_path"] == source["import_path"]
        assert app["route_prefix"] == "/" and app["args"]["region"] == region.name
        assert [d["name"] for d in app["deployments"]] == [d["name"] for d in source["deployments"]]
        for deployment, original in zip(app["deployments"], source["deployments"], strict=True):
            if deployment["name"] != "FusedDecider":
                assert deployment == original
                continue
            assert deployment["max_ongoing_requests"] == original["max_ongoing_requests"]
            scaling = deployment["autoscaling_config"]
            p = plans[region.name]
            assert (scaling["min_replicas"], scaling["max_replicas"]) == (
                p.min_replicas,
                p.max_replicas,
            )
            assert (
                scaling["target_ongoing_requests"]
                == (original["autoscaling_config"]["target_ongoing_requests"])
            )


def test_clusters_autoscale_within_the_plan_with_guaranteed_resources() -> None:
    plans = plan(load_capacity())
    for region in regions():
        (doc,) = [d for p, d in _documents() if p == f"{region.name}/rayservice.yaml"]
        cluster = doc["spec"]["rayClusterConfig"]
        assert cluster["enableInTreeAutoscaling"] is True
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        (group,) = cluster["workerGroupSpecs"]
        p = plans[region.name]
        assert (group["minReplicas"], group["maxReplicas"]) == (
            p.min_worker_pods,
            p.max_worker_pods,
        )
        # the pods can hold the replicas the autoscaler may ask for, and the side deployments
        cpus_per_pod = float(group["rayStartParams"]["num-cpus"])
        need = p.max_replicas * load_capacity().replica.cpus + side_cpus()
        assert group["maxReplicas"] * cpus_per_pod >= need
        (worker,) = group["template"]["spec"]["containers"]
        assert worker["resources"]["requests"] == worker["resources"]["limits"]
        assert worker["readinessProbe"]["httpGet"]["port"] == 8000
        env = {e["name"]: e.get("value") for e in worker["env"]}
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
        assert env["CHECKOUT_RISK_REGION"] == region.name


def test_residency_decides_who_publishes_and_replicates() -> None:
    docs = dict(((p, d["kind"]), d) for p, d in _documents())
    # eu-west keeps EU data in the EU: no other EU region, so no outbox and no replicator
    eu_env = {
        e["name"]
        for e in docs[("eu-west/rayservice.yaml", "RayService")]["spec"]["rayClusterConfig"][
            "workerGroupSpecs"
        ][0]["template"]["spec"]["containers"][0]["env"]
    }
    assert "CHECKOUT_RISK_PUBLISH_UPDATES" not in eu_env
    assert not (K8S / "eu-west" / "replicator.yaml").exists()
    us = docs[("us-east/replicator.yaml", "Deployment")]
    args = us["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["replicate", "--region", "us-east", "--to", "ap-southeast", "--to", "eu-west"]
    assert us["spec"]["replicas"] == plan(load_capacity())["us-east"].replicators


def test_jobs_run_the_agreed_commands_with_absolute_config_paths() -> None:
    docs = dict(((p, d["kind"]), d) for p, d in _documents())
    cron = docs[("eu-west/retrain-raycronjob.yaml", "RayCronJob")]
    entry = cron["spec"]["jobTemplate"]["entrypoint"]
    assert entry == "python -m trainers.retrain --config /etc/checkout-risk/training/default.yaml"
    config = docs[("eu-west/retrain-raycronjob.yaml", "ConfigMap")]["data"]["default.yaml"]
    assert config == (ROOT / "configs" / "training" / "default.yaml").read_text()
    mounts = cron["spec"]["jobTemplate"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ][0]["volumeMounts"]
    mounted = {m["mountPath"] for m in mounts}
    conf = yaml.safe_load(config)
    for name in ("events", "labels", "registry"):
        assert any(conf[name].startswith(m) for m in mounted), name
    for region in regions():
        drift = docs[(f"{region.name}/drift-cronjob.yaml", "CronJob")]
        container = drift["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert [*container["command"], *container["args"]] == [
            "checkout-risk",
            "drift-report",
            "--reference",
            "champion",
            "--current",
            "last:24h",
        ]
        # the reports land on a claim of their own, not in the pod's scratch space
        env = {e["name"]: e.get("value") for e in container["env"]}
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert env["CHECKOUT_RISK_REPORTS"] in mounts
        claims = {
            d["metadata"]["name"]
            for d in yaml.safe_load_all((K8S / region.name / "storage.yaml").read_text())
            if d and d["kind"] == "PersistentVolumeClaim"
        }
        volumes = drift["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
        assert {v["persistentVolumeClaim"]["claimName"] for v in volumes} <= claims
        assert "reports" in claims


def test_committed_manifests_match_a_fresh_render(capsys) -> None:
    assert k8s.check(K8S) == []
    assert main(["k8s", "render", "--check", "--out", str(K8S)]) == 0


def test_check_fails_on_an_edited_missing_or_stale_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "k8s"
    assert main(["k8s", "render", "--out", str(out)]) == 0
    assert main(["k8s", "render", "--check", "--out", str(out)]) == 0
    path = out / "us-east" / "rayservice.yaml"
    path.write_text(path.read_text().replace("min_replicas: ", "min_replicas: 1"))
    (out / "ap-southeast" / "redis.yaml").unlink()
    (out / "us-east" / "extra.yaml").write_text("kind: ConfigMap\n")
    assert main(["k8s", "render", "--check", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "us-east/rayservice.yaml (committed)" in err
    assert "ap-southeast/redis.yaml: missing" in err
    assert "us-east/extra.yaml: not produced" in err
    # render repairs the folder, stale files included
    assert main(["k8s", "render", "--out", str(out)]) == 0
    assert k8s.check(out) == []

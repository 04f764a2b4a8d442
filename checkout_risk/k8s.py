"""Kubernetes manifests for every region, rendered from the project's configs.

``checkout-risk k8s render --out k8s/`` writes, per region (each region is its own
Kubernetes cluster, namespace ``checkout-risk``):

* ``rayservice.yaml``: a KubeRay RayService whose ``serveConfigV2`` is the region's
  application of ``configs/serve/local.yaml`` (same import path, deployments and options)
  with production routing and the fused replica count and CPU from the capacity plan; a
  head that runs no replicas, one worker group sized by the plan, in-tree autoscaling,
  requests = limits, Serve-based readiness;
* ``disruption.yaml``: PodDisruptionBudgets for the serving workers, the head and Redis;
* ``redis.yaml``: the region's online store (Service + StatefulSet);
* ``replicator.yaml``: the cross-region replicator, when residency leaves a destination;
* ``drift-cronjob.yaml``: the hourly drift report;
* ``storage.yaml``: volumes for the registry, decision log (and training data);
* ``retrain-raycronjob.yaml``: in the training region only, the scheduled Ray Train job,
  with the training config (``configs/training/default.yaml``) in a ConfigMap;
* ``kustomization.yaml``: ``kubectl apply -k k8s/<region>``.

Sources: ``configs/regions/*.yaml``, ``configs/serve/local.yaml``, ``configs/capacity.yaml``,
``configs/training/default.yaml`` and ``configs/k8s.yaml`` (image, endpoints, schedules).
``--check`` compares a fresh render with the committed files, so they never drift.
"""

from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path
from typing import Any

import pydantic
import yaml

from checkout_risk.capacity import CapacityConfig, RegionPlan, load_capacity, plan
from serve_graph.config import RegionConfig, regions, replication_targets

ROOT = Path(__file__).resolve().parent.parent
K8S_CONFIG = ROOT / "configs" / "k8s.yaml"
SERVE_CONFIG = ROOT / "configs" / "serve" / "local.yaml"
TRAINING_CONFIG = ROOT / "configs" / "training" / "default.yaml"
SRV = "/srv/checkout-risk"
FUSED = "FusedDecider"
WORKER_GROUP = "fused"
APP_LABEL = "checkout-risk"
HEADER = "# Rendered by `checkout-risk k8s render` from configs/; do not edit by hand.\n"


class Volumes(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    models_gib: pydantic.PositiveInt
    decision_log_gib: pydantic.PositiveInt
    reports_gib: pydantic.PositiveInt = 20
    data_gib: pydantic.PositiveInt


class K8sConfig(pydantic.BaseModel):
    """configs/k8s.yaml"""

    model_config = pydantic.ConfigDict(extra="forbid")
    namespace: str
    image: str
    ray_version: str
    redis_image: str
    storage_class: str
    volumes: Volumes
    redis_endpoints: dict[str, str]
    training_region: str
    retrain_schedule: str
    drift_schedule: str


def load_k8s_config(path: Path = K8S_CONFIG) -> K8sConfig:
    try:
        return K8sConfig.model_validate(yaml.safe_load(Path(path).read_text()))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    except (yaml.YAMLError, pydantic.ValidationError) as exc:
        raise ValueError(f"invalid {path}: {exc}") from exc


class _Dumper(yaml.SafeDumper):
    """Plain YAML for humans and kubectl: no anchors, multi-line strings as blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, width=100)


# ---- helpers ------------------------------------------------------------------------------


def _labels(region: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP_LABEL,
        "app.kubernetes.io/component": component,
        "checkout-risk/region": region,
    }


def _meta(name: str, cfg: K8sConfig, region: str, component: str, **extra: Any) -> dict:
    return {"name": name, "namespace": cfg.namespace, "labels": _labels(region, component)} | (
        extra
    )


def _resources(cpus: float, memory_gib: float) -> dict[str, dict[str, str]]:
    """Requests equal to limits: Guaranteed QoS, so a noisy neighbour cannot take our CPU."""
    amount = {"cpu": _cpu(cpus), "memory": f"{math.ceil(memory_gib * 1024)}Mi"}
    return {"requests": dict(amount), "limits": dict(amount)}


def _cpu(cpus: float) -> str:
    return str(int(cpus)) if float(cpus).is_integer() else f"{math.ceil(cpus * 1000)}m"


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _redis_env(url: str, var: str = "REDIS_URL", secret: str = "redis-auth") -> list[dict]:
    """`var` = the URL with the password from `secret` (Kubernetes expands $(VAR))."""
    scheme, rest = url.split("://", 1)
    password = f"{var}_PASSWORD" if var != "REDIS_URL" else "REDIS_PASSWORD"
    return [
        _secret_env(password, secret, "password"),
        {"name": var, "value": f"{scheme}://:$({password})@{rest}"},
    ]


def _ray_env() -> list[dict[str, str]]:
    # the same Serve mode as the local cluster (checkout_risk/cluster.py): direct ingress
    # behind Serve's HAProxy, no usage reporting
    return [
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        {"name": "RAY_SERVE_THROUGHPUT_OPTIMIZED", "value": "1"},
        {"name": "RAY_SERVE_ENABLE_HA_PROXY", "value": "1"},
    ]


def _app_env(region: RegionConfig, publish: bool) -> list[dict[str, Any]]:
    env = [
        {"name": "CHECKOUT_RISK_REGION", "value": region.name},
        {"name": "CHECKOUT_RISK_MODELS", "value": f"{SRV}/models"},
        {"name": "CHECKOUT_RISK_RUN_DIR", "value": f"{SRV}/run"},
        _secret_env("CHECKOUT_RISK_LOG_KEY", "decision-log-key", "key"),
        *_redis_env("redis://redis:6379"),
    ]
    if publish:
        env.append({"name": "CHECKOUT_RISK_PUBLISH_UPDATES", "value": "1"})
    return env


def _volumes(training: bool = False) -> tuple[list[dict], list[dict]]:
    """(volumes, volumeMounts) of the registry and decision log (and training data)."""
    claims = [("models", f"{SRV}/models"), ("decision-log", f"{SRV}/run/decision-log")]
    if training:
        claims.append(("data", f"{SRV}/data"))
    volumes = [{"name": n, "persistentVolumeClaim": {"claimName": n}} for n, _ in claims]
    mounts = [{"name": n, "mountPath": p} for n, p in claims]
    return volumes, mounts


# ---- serve config -------------------------------------------------------------------------


def serve_application(region: RegionConfig, region_plan: RegionPlan, cap: CapacityConfig) -> dict:
    """The region's application from configs/serve/local.yaml, production-routed and sized.

    Taken verbatim (import path, deployments, batching and concurrency options) except:
    route ``/`` (one region per cluster), the registry and decision-log paths of the
    mounted volumes, and the fused deployment's autoscaling bounds and CPU from the plan.
    A region without its own entry in local.yaml uses the first application's.
    """
    local = yaml.safe_load(SERVE_CONFIG.read_text())
    apps = local["applications"]
    source = next((a for a in apps if a.get("args", {}).get("region") == region.name), apps[0])
    app = copy.deepcopy(source)
    app["name"] = region.name
    app["route_prefix"] = "/"
    app["args"] = dict(app.get("args", {})) | {
        "region": region.name,
        "registry": f"{SRV}/models",
        "log_dir": f"{SRV}/run/decision-log",
    }
    for deployment in app["deployments"]:
        if deployment["name"] == FUSED:
            scaling = dict(deployment.get("autoscaling_config") or {})
            scaling["min_replicas"] = region_plan.min_replicas
            scaling["max_replicas"] = region_plan.max_replicas
            scaling.setdefault("upscale_delay_s", 10)
            scaling.setdefault("downscale_delay_s", 300)
            deployment["autoscaling_config"] = scaling
            deployment["ray_actor_options"] = dict(deployment.get("ray_actor_options") or {}) | {
                "num_cpus": cap.replica.cpus
            }
    if not any(d["name"] == FUSED for d in app["deployments"]):
        raise ValueError(f"configs/serve/local.yaml: application has no {FUSED} deployment")
    return app


def serve_config(region: RegionConfig, region_plan: RegionPlan, cap: CapacityConfig) -> dict:
    local = yaml.safe_load(SERVE_CONFIG.read_text())
    return {
        "proxy_location": "EveryNode",
        "http_options": {
            "host": "0.0.0.0",
            "port": 8000,
            **{k: v for k, v in local.get("http_options", {}).items() if k not in ("host", "port")},
        },
        "applications": [serve_application(region, region_plan, cap)],
    }


# ---- resources ----------------------------------------------------------------------------


def _container(name: str, cfg: K8sConfig, cpus: float, memory_gib: float) -> dict[str, Any]:
    return {
        "name": name,
        "image": cfg.image,
        "imagePullPolicy": "IfNotPresent",
        "resources": _resources(cpus, memory_gib),
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def ray_cluster_spec(
    region: RegionConfig,
    cfg: K8sConfig,
    cap: CapacityConfig,
    region_plan: RegionPlan,
    publish: bool,
) -> dict[str, Any]:
    """The RayCluster spec of a region's RayService: head + one worker group."""
    volumes, mounts = _volumes()
    env = _ray_env() + _app_env(region, publish)
    head = _container("ray-head", cfg, cap.head_pod.cpus, cap.head_pod.memory_gib)
    head |= {
        "env": env,
        "volumeMounts": mounts,
        "ports": [
            {"containerPort": 6379, "name": "gcs-server"},
            {"containerPort": 8265, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
            {"containerPort": 8000, "name": "serve"},
        ],
    }
    worker = _container("ray-worker", cfg, cap.worker_pod.cpus, cap.worker_pod.memory_gib)
    worker |= {
        "env": env,
        "volumeMounts": mounts,
        "ports": [{"containerPort": 8000, "name": "serve"}],
        # ready only once this node's Serve proxy routes to a running application;
        # live as long as the raylet answers
        "readinessProbe": {
            "httpGet": {"path": "/-/healthz", "port": 8000},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/api/local_raylet_healthz", "port": 52365},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 6,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
    }
    pod_spec = {
        "terminationGracePeriodSeconds": 60,
        "volumes": volumes,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": _labels(region.name, "serve-worker")},
            }
        ],
    }
    return {
        "rayVersion": cfg.ray_version,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": 300,
            "resources": _resources(0.5, 0.5),
        },
        "headGroupSpec": {
            # no replicas on the head: it keeps GCS, the Serve controller and the dashboard
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": {
                "metadata": {"labels": _labels(region.name, "serve-head")},
                "spec": {"volumes": volumes, "containers": [head]},
            },
        },
        "workerGroupSpecs": [
            {
                "groupName": WORKER_GROUP,
                "replicas": region_plan.min_worker_pods,
                "minReplicas": region_plan.min_worker_pods,
                "maxReplicas": region_plan.max_worker_pods,
                "rayStartParams": {
                    "num-cpus": _cpu(cap.worker_pod.cpus - cap.worker_pod.reserved_cpus)
                },
                "template": {
                    "metadata": {"labels": _labels(region.name, "serve-worker")},
                    "spec": pod_spec | {"containers": [worker]},
                },
            }
        ],
    }


def ray_service(
    region: RegionConfig, cfg: K8sConfig, cap: CapacityConfig, region_plan: RegionPlan
) -> dict[str, Any]:
    publish = bool(replication_targets(region))
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _meta(
            f"checkout-risk-{region.name}",
            cfg,
            region.name,
            "serving",
            annotations={
                "checkout-risk/fused-replicas": (
                    f"{region_plan.min_replicas}-{region_plan.max_replicas}"
                ),
                "checkout-risk/peak-rps": str(region_plan.peak_rps),
                "checkout-risk/failover-rps": str(region_plan.failover_rps),
            },
        ),
        "spec": {
            "upgradeStrategy": {"type": "NewCluster"},  # zero-downtime upgrades
            "serviceUnhealthySecondThreshold": 120,
            "deploymentUnhealthySecondThreshold": 120,
            "serveConfigV2": yaml.safe_dump(
                serve_config(region, region_plan, cap), sort_keys=False
            ),
            "rayClusterConfig": ray_cluster_spec(region, cfg, cap, region_plan, publish),
        },
    }


def disruption_budgets(
    region: RegionConfig, cfg: K8sConfig, region_plan: RegionPlan
) -> list[dict[str, Any]]:
    def pdb(name: str, component: str, rule: dict[str, int]) -> dict[str, Any]:
        return {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(name, cfg, region.name, component),
            "spec": rule | {"selector": {"matchLabels": _labels(region.name, component)}},
        }

    return [
        # voluntary evictions may take only the pods the own peak can spare
        pdb("serve-workers", "serve-worker", {"maxUnavailable": region_plan.pods_allowed_down}),
        # the head holds the Serve controller: drain it only through a RayService upgrade
        pdb("serve-head", "serve-head", {"maxUnavailable": 0}),
        pdb("redis", "redis", {"maxUnavailable": 0}),
    ]


def redis_manifests(
    region: RegionConfig, cfg: K8sConfig, cap: CapacityConfig, region_plan: RegionPlan
) -> list[dict[str, Any]]:
    """One Redis primary per region (the write script needs all of an attempt's keys on one
    primary); the planned shard count is recorded as an annotation (docs/regions.md)."""
    labels = _labels(region.name, "redis")
    memory_mib = math.ceil(cap.redis.memory_gib * 1024)
    maxmemory = f"{int(memory_mib * 0.85)}mb"  # leave room for fork-less overhead and buffers
    container = {
        "name": "redis",
        "image": cfg.redis_image,
        "command": ["/bin/sh", "-c"],
        "args": [
            'exec redis-server --requirepass "$REDIS_PASSWORD" --appendonly yes '
            f"--appendfsync everysec --maxmemory {maxmemory} --maxmemory-policy noeviction "
            "--save ''"
        ],
        "env": [_secret_env("REDIS_PASSWORD", "redis-auth", "password")],
        "ports": [{"containerPort": 6379, "name": "redis"}],
        "resources": _resources(2, cap.redis.memory_gib),
        "readinessProbe": {
            "exec": {"command": ["/bin/sh", "-c", 'redis-cli -a "$REDIS_PASSWORD" ping']},
            "periodSeconds": 5,
        },
        "volumeMounts": [{"name": "redis-data", "mountPath": "/data"}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("redis", cfg, region.name, "redis"),
            "spec": {
                "selector": labels,
                "ports": [{"name": "redis", "port": 6379, "targetPort": 6379}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(
                "redis",
                cfg,
                region.name,
                "redis",
                annotations={
                    "checkout-risk/redis-ops-per-s": str(int(region_plan.redis_ops)),
                    "checkout-risk/redis-shards-planned": str(region_plan.redis_shards),
                },
            ),
            "spec": {
                "serviceName": "redis",
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [container], "terminationGracePeriodSeconds": 30},
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "redis-data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{memory_mib * 2}Mi"}},
                        },
                    }
                ],
            },
        },
    ]


def storage(region: RegionConfig, cfg: K8sConfig, training: bool) -> list[dict[str, Any]]:
    sizes = {
        "models": cfg.volumes.models_gib,
        "decision-log": cfg.volumes.decision_log_gib,
        "reports": cfg.volumes.reports_gib,
    }
    if training:
        sizes["data"] = cfg.volumes.data_gib
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta(name, cfg, region.name, "storage"),
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": cfg.storage_class,
                "resources": {"requests": {"storage": f"{gib}Gi"}},
            },
        }
        for name, gib in sizes.items()
    ]


def replicator(
    region: RegionConfig, cfg: K8sConfig, targets: list[str], region_plan: RegionPlan
) -> list[dict[str, Any]]:
    """Replicators sharing the region's outbox (each its own consumer, named by its pod;
    a dead one's entries are claimed by the others)."""
    labels = _labels(region.name, "replicator")
    args = ["replicate", "--region", region.name]
    env = [*_redis_env("redis://redis:6379")]
    for target in targets:
        var = f"REDIS_URL_{target.upper().replace('-', '_')}"
        args += ["--to", target]  # URL from the environment, not the command line
        env += _redis_env(cfg.redis_endpoints[target], var, f"redis-auth-{target}")
    container = _container("replicator", cfg, 1, 1) | {
        "command": ["checkout-risk"],
        "args": args,
        "env": env,
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta("replicator", cfg, region.name, "replicator"),
            "spec": {
                "replicas": region_plan.replicators,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        }
    ]


def drift_cronjob(region: RegionConfig, cfg: K8sConfig) -> dict[str, Any]:
    volumes, mounts = _volumes()
    # the HTML and JSON reports outlive the pod: on their own claim, read by whoever alerts
    volumes.append({"name": "reports", "persistentVolumeClaim": {"claimName": "reports"}})
    mounts.append({"name": "reports", "mountPath": f"{SRV}/reports"})
    container = _container("drift-report", cfg, 2, 4) | {
        "command": ["checkout-risk"],
        "args": ["drift-report", "--reference", "champion", "--current", "last:24h"],
        "env": [
            {"name": "CHECKOUT_RISK_REGION", "value": region.name},
            {"name": "CHECKOUT_RISK_MODELS", "value": f"{SRV}/models"},
            {"name": "CHECKOUT_RISK_RUN_DIR", "value": f"{SRV}/run"},
            {"name": "CHECKOUT_RISK_REPORTS", "value": f"{SRV}/reports"},
            _secret_env("CHECKOUT_RISK_LOG_KEY", "decision-log-key", "key"),
        ],
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta("drift-report", cfg, region.name, "monitoring"),
        "spec": {
            "schedule": cfg.drift_schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 5,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 3000,
                    "template": {
                        "metadata": {"labels": _labels(region.name, "monitoring")},
                        "spec": {
                            "restartPolicy": "Never",
                            "volumes": volumes,
                            "containers": [container],
                        },
                    },
                }
            },
        },
    }


def training_configmap(region: RegionConfig, cfg: K8sConfig) -> dict[str, Any]:
    """configs/training/default.yaml, validated, with its absolute paths checked against
    the volumes the job mounts."""
    from trainers.retrain import RetrainConfig

    text = TRAINING_CONFIG.read_text()
    conf = RetrainConfig.model_validate(yaml.safe_load(text))
    for name in ("events", "labels", "registry"):
        path = getattr(conf, name)
        if not path.startswith(f"{SRV}/"):
            raise ValueError(
                f"{TRAINING_CONFIG}: {name} = {path} is not under {SRV}, where the job "
                "mounts its volumes"
            )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("training-config", cfg, region.name, "training"),
        "data": {"default.yaml": text},
    }


def retrain_cronjob(region: RegionConfig, cfg: K8sConfig, cap: CapacityConfig) -> dict[str, Any]:
    """A RayCronJob: a fresh RayCluster per run, deleted when the job ends."""
    from trainers.retrain import RetrainConfig

    conf = RetrainConfig.model_validate(yaml.safe_load(TRAINING_CONFIG.read_text()))
    volumes, mounts = _volumes(training=True)
    volumes.append({"name": "training-config", "configMap": {"name": "training-config"}})
    mounts.append({"name": "training-config", "mountPath": "/etc/checkout-risk/training"})
    env = [
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        {"name": "CHECKOUT_RISK_MODELS", "value": f"{SRV}/models"},
    ]
    worker_cpus = max(2, math.ceil(conf.cpus_per_worker) + 1)
    head = _container("ray-head", cfg, 4, 16) | {"env": env, "volumeMounts": mounts}
    worker = _container("ray-worker", cfg, worker_cpus, 16) | {"env": env, "volumeMounts": mounts}
    job = {
        "entrypoint": (
            "python -m trainers.retrain --config /etc/checkout-risk/training/default.yaml"
        ),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": 3600,
        "activeDeadlineSeconds": 6 * 3600,
        "backoffLimit": 1,
        "rayClusterSpec": {
            "rayVersion": cfg.ray_version,
            "headGroupSpec": {
                "rayStartParams": {"dashboard-host": "0.0.0.0"},
                "template": {
                    "metadata": {"labels": _labels(region.name, "training")},
                    "spec": {"volumes": volumes, "containers": [head]},
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": "train",
                    "replicas": conf.workers,
                    "minReplicas": conf.workers,
                    "maxReplicas": conf.workers,
                    "rayStartParams": {},
                    "template": {
                        "metadata": {"labels": _labels(region.name, "training")},
                        "spec": {"volumes": volumes, "containers": [worker]},
                    },
                }
            ],
        },
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCronJob",
        "metadata": _meta("retrain", cfg, region.name, "training"),
        "spec": {"schedule": cfg.retrain_schedule, "jobTemplate": job},
    }


# ---- the whole tree -----------------------------------------------------------------------


def render() -> dict[str, str]:
    """Relative path -> file text of every manifest (deterministic: same configs, same
    bytes)."""
    cfg = load_k8s_config()
    cap = load_capacity()
    configs = regions()
    plans = plan(cap, configs)
    names = {r.name for r in configs}
    if cfg.training_region not in names:
        raise ValueError(f"configs/k8s.yaml: training_region {cfg.training_region} unknown")
    files: dict[str, str] = {}
    for region in configs:
        targets = replication_targets(region, configs)
        missing = sorted(set(targets) - set(cfg.redis_endpoints))
        if missing:
            raise ValueError(f"configs/k8s.yaml: no redis_endpoints for {missing}")
        training = region.name == cfg.training_region
        docs: dict[str, list[dict[str, Any]]] = {
            "storage.yaml": storage(region, cfg, training),
            "redis.yaml": redis_manifests(region, cfg, cap, plans[region.name]),
            "rayservice.yaml": [ray_service(region, cfg, cap, plans[region.name])],
            "disruption.yaml": disruption_budgets(region, cfg, plans[region.name]),
            "drift-cronjob.yaml": [drift_cronjob(region, cfg)],
        }
        if targets:
            docs["replicator.yaml"] = replicator(region, cfg, targets, plans[region.name])
        if training:
            docs["retrain-raycronjob.yaml"] = [
                training_configmap(region, cfg),
                retrain_cronjob(region, cfg, cap),
            ]
        for name, objects in docs.items():
            files[f"{region.name}/{name}"] = HEADER + dump(objects)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": cfg.namespace,
            "resources": list(docs),
        }
        files[f"{region.name}/kustomization.yaml"] = HEADER + dump([kustomization])
    return files


def write(out: Path) -> list[Path]:
    """Render into `out`, removing manifests of regions or kinds that no longer exist."""
    files = render()
    out = Path(out)
    for old in sorted(out.glob("*/*.yaml")):
        if str(old.relative_to(out)) not in files:
            old.unlink()
    written = []
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def check(out: Path) -> list[str]:
    """Differences between the committed manifests in `out` and a fresh render (empty when
    they agree), as unified diffs and missing/extra file notes."""
    files = render()
    out = Path(out)
    problems = []
    present = {str(p.relative_to(out)) for p in out.glob("*/*.yaml")}
    for rel in sorted(present - set(files)):
        problems.append(f"{rel}: not produced by the renderer (stale)")
    for rel, text in sorted(files.items()):
        path = out / rel
        if not path.exists():
            problems.append(f"{rel}: missing")
            continue
        committed = path.read_text()
        if committed != text:
            diff = difflib.unified_diff(
                committed.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{rel} (committed)",
                f"{rel} (rendered)",
                n=1,
            )
            problems.append("".join(diff))
    return problems

"""The serving topologies side by side, open loop, in one run on one machine.

    make bench-serving            (= python -m bench.serving)

From scratch: simulate a marketplace, train a model locally, load the history into the
online store (embedded Redis, or ``REDIS_URL``), start the local Ray cluster, and serve the
same model, policy, Redis and stage code three ways:

* ``baseline`` — one uvicorn process running the pipeline (``serve_graph.standalone``): the
  floor a team would build without Ray Serve;
* ``fused`` — the production hot path: one Serve deployment per region running every stage
  in-process, direct ingress behind Serve's HAProxy on :8000;
* ``graph`` — the shipped graph (``configs/serve/graph.yaml``): the stages its ``hops``
  name are deployments of their own, reached through ``DeploymentHandle``s carrying
  micro-batches; the others run in its ingress;
* ``graph-all`` — every stage its own deployment (feature lookup, policy, scorer,
  combiner), the chain as first designed.

For each, the offered rate rises until a step is not sustainable (an error, p99 over the
120 ms budget, achieved < 95% of offered, or more than 1% of answers degraded); then the
fused mode is held at 70% of its maximum and at 2x it (overload), and the web layer alone
(``bench/noop_server.py``, no risk work) is offered the same two rates, in a uvicorn
process (what this machine and load generator put under any p99) and in a Serve replica
served like the fused one (what Serve's request handling costs every answer, a shed one
included). The load generator (``bench/load.py``) shares the two cores with the servers,
equally for all of them.
Results: ``bench/results/serving.json`` and a latency-against-load plot
``bench/results/serving.html``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.common import RESULTS, write
from bench.load import bodies, find_max, run_step, sample_attempts

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".run" / "bench-serving"
BASELINE_PORT = 8100
SNAPSHOT_DB = 15  # the materialised store, restored before each measurement
NOOP_PORT = 8101
SERVE_BASE = "http://127.0.0.1:8000"
TOPOLOGIES = ("baseline", "fused", "graph", "graph-all")


STARTED = time.monotonic()


def log(msg: str) -> None:
    """Each line with the minutes and seconds since the benchmark started."""
    took = int(time.monotonic() - STARTED)
    print(f"[{took // 60:02d}:{took % 60:02d}] {msg}", flush=True)


def prepare(days: int, tx_per_day: int) -> dict[str, Any]:
    """Data, a champion model and a loaded online store; reused when already built."""
    import json
    import shutil

    from feature_views.materialize import materialize
    from serve_graph.config import load_region
    from serve_graph.pipeline import region_store_url
    from simulator.config import load_scenario
    from simulator.marketplace import simulate
    from trainers.registry import Registry
    from trainers.train import train

    data, registry = WORK / "sim", WORK / "models"
    manifest = data / "_SUCCESS.json"
    if manifest.exists():
        found = json.loads(manifest.read_text())
        if (found.get("days"), found.get("tx_per_day")) != (days, tx_per_day):
            shutil.rmtree(data)
            shutil.rmtree(registry, ignore_errors=True)  # trained on the old data
    if not manifest.exists():
        log(f"simulating {days} days x {tx_per_day} attempts/day ...")
        simulate(
            load_scenario(overrides={"fraud": {"rate": 0.006}}),
            days=days,
            tx_per_day=tx_per_day,
            seed=11,
            out=data,
            overwrite=True,
            progress=False,
        )
    if not (registry / "v1" / "metadata.json").exists():
        log("training a model locally ...")
        registry.mkdir(parents=True, exist_ok=True)
        train(data / "events", data / "labels", registry / "v1")
    Registry(registry).set_stage("v1", "champion", "serving benchmark")
    region = load_region("us-east")
    url = region_store_url(region)
    log(f"loading the online store ({url}) ...")
    materialize(
        data / "events",
        data / "labels",
        namespace=region.namespace,
        url=url,
        flush=True,
        progress=False,
    )
    copy_db(url, SNAPSHOT_DB)
    return {"data": data, "registry": registry, "redis_url": url}


def copy_db(url: str, to_db: int, from_db: int | None = None) -> int:
    """Copy every key of the store's database (or of `from_db`) into database `to_db`,
    replacing what was there (Redis >= 6.2 ``COPY``, server-side: ~2 s for 225k keys).

    Every request a step sends is written back to the store, as in production, and the
    replayed attempts keep their event times: each replay adds to the same entities'
    windows. Restoring the snapshot before each topology and each hold gives every one
    of them the same store, not the one the topologies before it left behind.
    """
    client = _db(url, from_db)
    target = _db(url, to_db)
    target.flushdb()
    pipe = client.pipeline(transaction=False)
    copied = 0
    for key in client.scan_iter(count=5_000):
        pipe.execute_command("COPY", key, key, "DB", to_db, "REPLACE")
        copied += 1
        if copied % 5_000 == 0:
            pipe.execute()
    pipe.execute()
    client.close()
    target.close()
    return copied


def _db(url: str, db: int | None = None) -> Any:
    """A client of the server at `url`, on database `db` (default: the URL's)."""
    import redis

    pool = redis.ConnectionPool.from_url(url)
    if db is None:
        return redis.Redis(connection_pool=pool)
    kwargs = dict(pool.connection_kwargs, db=db)
    return redis.Redis(connection_pool=redis.ConnectionPool(pool.connection_class, **kwargs))


def restore_store(url: str) -> None:
    """The store as materialised (see `copy_db`)."""
    copy_db(url, int(_db(url).connection_pool.connection_kwargs.get("db", 0)), SNAPSHOT_DB)


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def start_baseline(env_paths: dict[str, Any], log_dir: Path) -> subprocess.Popen:
    env = {
        "CHECKOUT_RISK_MODELS": str(env_paths["registry"]),
        "REDIS_URL": env_paths["redis_url"],
        "CHECKOUT_RISK_REGION": "us-east",
        "CHECKOUT_RISK_LOG_DIR": str(log_dir),
    }
    return _uvicorn("serve_graph.standalone:create_app", BASELINE_PORT, env)


def start_noop() -> subprocess.Popen:
    return _uvicorn("bench.noop_server:create_app", NOOP_PORT, {})


def _uvicorn(factory: str, port: int, extra_env: dict[str, str]) -> subprocess.Popen:
    if not _free(port):
        raise SystemExit(f"port {port} is taken: stop what listens there first")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=dict(os.environ) | extra_env,
        cwd=ROOT,
    )


def deploy(
    env_paths: dict[str, Any],
    log_dir: Path,
    fused_replicas: int,
    graphs: dict[str, list[str] | tuple[str, ...]],
) -> None:
    """The fused app at /fused and each graph of `graphs` (topology name: its hops) at
    /{name}; all idle but the one measured. Only the graphs to be measured are deployed:
    an idle one is still five replicas sharing the two cores."""
    from checkout_risk import cluster
    from serve_graph.deployments import hop_deployments

    cluster.up()
    common = {
        "registry": str(env_paths["registry"]),
        "log_dir": str(log_dir),
        "redis_url": env_paths["redis_url"],
        "region": "us-east",
    }
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": [
            {
                "name": "bench-fused",
                "route_prefix": "/fused",
                "import_path": "serve_graph.deployments:fused_app",
                "args": common,
                "logging_config": {"enable_access_log": False},  # as the baseline's uvicorn
                "deployments": [
                    {
                        "name": "FusedDecider",
                        "num_replicas": fused_replicas,
                        "max_ongoing_requests": 256,
                        "ray_actor_options": {"num_cpus": 0.5},
                    },
                    {"name": "ShadowScorerDeployment", "ray_actor_options": {"num_cpus": 0.1}},
                ],
            },
            {  # the web layer alone in a replica, measured beside the fused decider
                "name": "bench-noop",
                "route_prefix": "/noop",
                "import_path": "bench.noop_server:serve_app",
                "logging_config": {"enable_access_log": False},
                "deployments": [
                    {
                        "name": "NoopReplica",
                        "max_ongoing_requests": 256,
                        "ray_actor_options": {"num_cpus": 0.1},
                    }
                ],
            },
            *(
                {
                    "name": f"bench-{name}",
                    "route_prefix": f"/{name}",
                    "import_path": "serve_graph.deployments:graph_app",
                    "args": common | {"hops": list(hops)},
                    "logging_config": {"enable_access_log": False},
                    "deployments": [
                        {
                            "name": n,
                            "num_replicas": 1,
                            "max_ongoing_requests": 256,
                            "ray_actor_options": {"num_cpus": 0.1},
                        }
                        for n in hop_deployments(hops)
                    ],
                }
                for name, hops in graphs.items()
            ),
        ],
    }
    path = WORK / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    cluster.serve("deploy", str(path))


def shipped_graph_hops() -> list[str] | None:
    """The hops of the graph application in ``configs/serve/graph.yaml``: the graph
    measured is the graph shipped."""
    config = yaml.safe_load((ROOT / "configs" / "serve" / "graph.yaml").read_text())
    (app,) = config["applications"]
    return app["args"].get("hops")


def wait_healthy(url: str, key: str, timeout_s: float = 300) -> None:
    from serve_graph.deployments import wait_ready

    wait_ready(url, key, timeout_s)


def warm(url: str, key: str, body: Any) -> None:
    """A few seconds of light traffic: first calls load models and open connections."""
    asyncio.run(run_step(url, key, body, 50, 4))


def plot(results: dict[str, Any], out: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, r in results["topologies"].items():
        steps = sorted(r["steps"], key=lambda s: s["offered_rps"])
        x = [s["offered_rps"] for s in steps]
        fig.add_trace(go.Scatter(x=x, y=[s["p99_ms"] for s in steps], name=f"{name} p99"))
        fig.add_trace(
            go.Scatter(
                x=x, y=[s["p50_ms"] for s in steps], name=f"{name} p50", line={"dash": "dot"}
            )
        )
    fig.add_hline(y=120, line_dash="dash", annotation_text="120 ms budget")
    fig.update_layout(
        title="Latency against offered load (open loop, same machine, one run)",
        xaxis_title="offered requests/s",
        yaxis_title="latency (ms)",
        yaxis_type="log",
    )
    fig.write_html(str(out), include_plotlyjs="cdn")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serving topologies side by side, open loop.")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--tx-per-day", type=int, default=2000)
    parser.add_argument("--step-seconds", type=float, default=6.0)
    parser.add_argument("--hold-seconds", type=float, default=15.0)
    parser.add_argument("--factor", type=float, default=1.4, help="rate growth per step")
    parser.add_argument("--fused-replicas", type=int, default=1)
    parser.add_argument(
        "--graph-hops",
        help="the stages the graph runs as deployments of their own, comma-separated "
        "(default: the hops of configs/serve/graph.yaml)",
    )
    parser.add_argument(
        "--fused-max-rps",
        type=float,
        help="hold the fused mode at 70%% and 2x of this rate instead of searching for its "
        "maximum: two revisions compared at the same offered rates on a noisy machine",
    )
    parser.add_argument("--only", choices=TOPOLOGIES, action="append", help="repeatable")
    parser.add_argument("--name", default="serving", help="results file name")
    args = parser.parse_args(argv)
    if args.days < 30 or args.tx_per_day < 100 or args.step_seconds <= 0 or args.factor <= 1:
        parser.error("need --days >= 30, --tx-per-day >= 100, --step-seconds > 0, --factor > 1")
    if args.fused_max_rps is not None and args.fused_max_rps <= 0:
        parser.error("--fused-max-rps must be positive")
    from serve_graph.deployments import GRAPH_HOPS, graph_hops

    try:
        hops = list(graph_hops(args.graph_hops or shipped_graph_hops()))
    except ValueError as exc:
        parser.error(f"--graph-hops: {exc}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from serve_graph.config import dev_key

    WORK.mkdir(parents=True, exist_ok=True)
    paths = prepare(args.days, args.tx_per_day)
    key = dev_key()
    attempts = sample_attempts(str(paths["data"]), 5_000)
    run_id = int(time.time())
    log_root = WORK / f"decision-log-{run_id}"
    wanted = args.only or list(TOPOLOGIES)
    urls = {
        "baseline": f"http://127.0.0.1:{BASELINE_PORT}",
        "fused": f"{SERVE_BASE}/fused",
        "graph": f"{SERVE_BASE}/graph",
        "graph-all": f"{SERVE_BASE}/graph-all",
    }
    baseline = None
    try:
        served = {"fused", "graph", "graph-all"} & set(wanted)  # on the Ray cluster
        if served:
            log("deploying the fused and graph applications on the local Ray cluster ...")
            graphs = {"graph": hops, "graph-all": GRAPH_HOPS}
            graphs = {name: h for name, h in graphs.items() if name in served}
            deploy(paths, log_root / "serve", args.fused_replicas, graphs)
            for name in served:
                wait_healthy(urls[name], key)
        results: dict[str, Any] = {"topologies": {}}
        for name in wanted:
            if name == "baseline":  # runs only while measured: the Ray apps stay up, idle
                baseline = start_baseline(paths, log_root / "baseline")
                wait_healthy(urls[name], key)
            restore_store(paths["redis_url"])
            settle()
            body = bodies(attempts, f"{name}-{run_id}")
            log(f"{name}: {urls[name]}")
            warm(urls[name], key, body)
            if name == "fused" and args.fused_max_rps is not None:
                log(f"  maximum given, not searched: {args.fused_max_rps:.0f}/s")
                results["topologies"][name] = {
                    "max_rps": args.fused_max_rps,
                    "given": True,
                    "steps": [],
                }
                continue
            best, steps = asyncio.run(
                find_max(urls[name], key, body, 50, args.factor, args.step_seconds, log)
            )
            results["topologies"][name] = {"max_rps": round(best, 1), "steps": steps}
            if name == "baseline" and baseline is not None:
                stop(baseline)
                baseline = None
        if "fused" in wanted and results["topologies"]["fused"]["max_rps"] > 0:
            fmax = results["topologies"]["fused"]["max_rps"]
            body = bodies(attempts, f"hold-{run_id}")
            restore_store(paths["redis_url"])
            settle()
            replicas = replica_pids("bench-fused", "FusedDecider")
            log(f"fused at 70% of its maximum ({0.7 * fmax:.0f}/s) for {args.hold_seconds:.0f} s")
            at70 = held(urls["fused"], key, body, 0.7 * fmax, args.hold_seconds, replicas)
            log(f"  {at70}")
            restore_store(paths["redis_url"])
            settle()
            log(f"fused overloaded at 2x its maximum ({2 * fmax:.0f}/s)")
            over = held(urls["fused"], key, body, 2 * fmax, args.hold_seconds, replicas)
            log(f"  {over}")
            results["fused_at_70pct"] = at70
            results["overload"] = over
            rates = {"70pct": 0.7 * fmax, "2x": 2 * fmax}
            noop = hold_noop(key, body, rates, args.hold_seconds)
            results["noop_at_70pct"], results["noop_at_2x"] = noop["70pct"], noop["2x"]
            noop = hold_noop_replica(key, body, rates, args.hold_seconds)
            results["noop_replica_at_70pct"] = noop["70pct"]
            results["noop_replica_at_2x"] = noop["2x"]
        t = results["topologies"]
        summary: dict[str, Any] = {
            f"{n.replace('-', '_')}_max_rps": t[n]["max_rps"] for n in TOPOLOGIES if n in t
        }
        if "overload" in results:
            summary["fused_p99_ms_at_70pct"] = results["fused_at_70pct"]["p99_ms"]
            summary["fused_degraded_share_at_70pct"] = results["fused_at_70pct"]["degraded_share"]
            summary["fused_server_p99_ms_at_70pct"] = results["fused_at_70pct"]["p99_server_ms"]
            summary["noop_p99_ms_at_70pct"] = results["noop_at_70pct"]["p99_ms"]
            summary["overload_p99_ms"] = results["overload"]["p99_ms"]
            summary["overload_errors"] = results["overload"]["errors"]
            summary["overload_shed_share"] = results["overload"]["degraded_share"]
            # what an answer cost the server's processes: on the full path (70%), mostly at
            # the cheapest rung (2x), and in the web layer alone (the no-op server at 70%).
            # Shedding can answer 2x only while the second is under half the first, and
            # only while the replica's one interpreter lock can carry 2x at that cost.
            full = results["fused_at_70pct"]["server_cpu_ms_per_answer"]
            shed = results["overload"]["server_cpu_ms_per_answer"]
            summary["fused_cpu_ms_per_answer_at_70pct"] = full
            summary["overload_cpu_ms_per_answer"] = shed
            noop = results["noop_at_70pct"]["server_cpu_ms_per_answer"]
            summary["noop_cpu_ms_per_answer_at_70pct"] = noop
            if full and shed:
                summary["overload_cost_over_full"] = round(shed / full, 3)
            # the web layer alone at 2x, and where the machine's cores went at 2x: when the
            # load generator, Redis and HAProxy leave the replica less than 2x needs at the
            # shed cost, no shedding in the replica can answer 2x
            summary["noop_cpu_ms_per_answer_at_2x"] = results["noop_at_2x"][
                "server_cpu_ms_per_answer"
            ]
            summary["noop_p99_ms_at_2x"] = results["noop_at_2x"]["p99_ms"]
            # the same app in a Serve replica: Serve's own request handling, which every
            # answer of the fused decider pays, a shed one included
            for rate in ("70pct", "2x"):
                hold = results[f"noop_replica_at_{rate}"]
                summary[f"noop_replica_cpu_ms_per_answer_at_{rate}"] = hold[
                    "server_cpu_ms_per_answer"
                ]
                summary[f"noop_replica_p99_ms_at_{rate}"] = hold["p99_ms"]
            summary["noop_replica_cores_at_2x"] = results["noop_replica_at_2x"]["server_cores"]
            summary["overload_cores"] = results["overload"]["cores"]
            summary |= loop_figures(
                results["fused_at_70pct"], results["overload"], results["noop_replica_at_2x"]
            )
        if "baseline" in t and "fused" in t and t["baseline"]["max_rps"]:
            summary["fused_over_baseline"] = round(
                t["fused"]["max_rps"] / t["baseline"]["max_rps"], 3
            )
        for graph in ("graph", "graph-all"):
            if graph in t and "fused" in t and t["fused"]["max_rps"]:
                ratio = round(t[graph]["max_rps"] / t["fused"]["max_rps"], 3)
                summary[f"{graph.replace('-', '_')}_over_fused"] = ratio
        results = summary | {
            "setup": {
                "fused_replicas": args.fused_replicas,
                "graph_hops": hops,
                "data": f"{args.days} days x {args.tx_per_day}/day",
                "redis": "REDIS_URL" if os.environ.get("REDIS_URL") else "embedded (unix socket)",
                "step_seconds": args.step_seconds,
                "hold_seconds": args.hold_seconds,
                "store": "restored to the materialised snapshot before each topology and hold",
                "sustainable": "0 errors, p99 <= 120 ms, achieved >= 95% offered, <= 1% degraded",
                "load_generator": "bench/load.py (aiohttp, open loop) on the same 2 cores",
            },
            **results,
        }
        results["setup"]["elapsed_s"] = round(time.monotonic() - STARTED)
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot(results, RESULTS / f"{args.name}.html")
        write(args.name, results, "bench.serving")
    finally:
        if baseline is not None:
            stop(baseline)


def loop_figures(at70: dict, over: dict, noop_replica_2x: dict) -> dict[str, float | None]:
    """The replica's event-loop thread per answer, from three holds' busiest thread.

    Every answer, shed or not, is read, parsed and written back by the replica's one event
    loop, and in overloaded runs that thread got 0.62-0.69 of a core however far past the
    maximum the load went. So whether shedding can answer twice the maximum is a question
    of loop time, not of CPU in all: `overload_loop_load_over_max` is the loop time 2x
    asks for, over what the maximum asked (taking the 70% hold's time an answer as the
    maximum's, which batching at the maximum makes, if anything, smaller). Near 1, 2x
    loads the loop as the maximum did, where p99 just met the budget.
    `overload_web_share_of_loop` is how much of a shed answer's loop time the no-op Serve
    replica (the same web layer, no risk work) spends at the same rate: what no admission
    rule in the replica can shed.
    """

    def per_answer(hold: dict) -> float | None:
        rps, threads = hold.get("achieved_rps"), hold.get("server_busiest_threads_cores")
        return round(1000 * threads[0] / rps, 3) if rps and threads else None

    full, shed, web = per_answer(at70), per_answer(over), per_answer(noop_replica_2x)
    return {
        "fused_loop_ms_per_answer_at_70pct": full,
        "overload_loop_ms_per_answer": shed,
        "noop_replica_loop_ms_per_answer_at_2x": web,
        "overload_loop_load_over_max": round(2 * shed / full, 3) if full and shed else None,
        "overload_web_share_of_loop": round(web / shed, 3) if shed and web else None,
    }


def hold_noop(key: str, body: Any, rates: dict[str, float], seconds: float) -> dict[str, Any]:
    """The same load at the same rates against the web layer alone
    (``bench/noop_server.py``): the latency and CPU this machine and this load generator
    cost before any risk work. `rates`: name -> requests/s; returns name -> hold."""
    noop = start_noop()
    try:
        url = f"http://127.0.0.1:{NOOP_PORT}"
        return _hold_rates(url, key, body, rates, seconds, [noop.pid], "no-op server")
    finally:
        stop(noop)


def hold_noop_replica(
    key: str, body: Any, rates: dict[str, float], seconds: float
) -> dict[str, Any]:
    """`hold_noop` against the no-op app in a Serve replica (``/noop``, deployed beside the
    fused decider, served the same way): what Serve's request handling adds per answer."""
    pids = replica_pids("bench-noop", "NoopReplica")
    return _hold_rates(f"{SERVE_BASE}/noop", key, body, rates, seconds, pids, "no-op Serve replica")


def _hold_rates(
    url: str,
    key: str,
    body: Any,
    rates: dict[str, float],
    seconds: float,
    pids: list[int],
    name: str,
) -> dict[str, Any]:
    """Each of `rates` held in turn against a no-op server `name` once it is healthy and
    warm, each from an idle machine."""
    wait_healthy(url, key, 60)
    warm(url, key, body)
    out = {}
    for label, rate in rates.items():
        settle()
        log(f"{name} (web layer, no risk work) at {rate:.0f}/s for {seconds:.0f} s")
        out[label] = held(url, key, body, rate, seconds, pids)
        log(f"  {out[label]}")
    return out


def held(url: str, key: str, body: Any, rate: float, seconds: float, pids: list[int]) -> dict:
    """One rate held for `seconds`, with the CPU the server's processes `pids` spent
    meanwhile: per answer, and in cores (1.0 is all one core can give a process whose
    Python runs under one GIL). `cores` splits the whole machine's busy time between the
    server, this process (the load generator), Redis, HAProxy and everything else: when
    it sums to every core, the machine is the limit, not the server."""
    roles = {
        "server": pids,
        "load_generator": [os.getpid()],
        "redis": processes_named("redis-server"),
        "haproxy": processes_named("haproxy"),
    }
    before = {role: cpu_seconds(p) for role, p in roles.items()}
    threads_before = thread_seconds(pids)
    busy_before, started = _busy(), time.monotonic()
    step = asyncio.run(run_step(url, key, body, rate, seconds))
    elapsed = time.monotonic() - started
    s = step.summary()
    busy_after = _busy()
    spent = {role: cpu_seconds(p) - before[role] for role, p in roles.items()}
    threads = thread_seconds(pids)
    by_thread = sorted(
        (t - threads_before.get(tid, 0.0) for tid, t in threads.items()), reverse=True
    )
    # a replica's event loop is one thread: if the busiest thread stays well under one
    # core while the machine has cores to spare, the loop waits (for the interpreter lock,
    # Redis, the disk), not computes
    s["server_busiest_threads_cores"] = [round(t / elapsed, 3) for t in by_thread[:3]]
    s["server_cpu_s"] = round(spent["server"], 3)
    s["server_cores"] = round(spent["server"] / elapsed, 3)
    s["server_cpu_ms_per_answer"] = round(1000 * spent["server"] / s["ok"], 4) if s["ok"] else None
    ticks = max(1, busy_after[1] - busy_before[1])
    machine = (busy_after[0] - busy_before[0]) / ticks * (os.cpu_count() or 1)
    cores = {role: round(cpu / elapsed, 3) for role, cpu in spent.items()}
    cores["other"] = round(max(0.0, machine - sum(cpu / elapsed for cpu in spent.values())), 3)
    s["cores"] = cores | {"machine_busy": round(machine, 3), "machine": os.cpu_count()}
    s["by_second"] = step.by_second()
    return s


def thread_seconds(pids: list[int]) -> dict[tuple[int, int], float]:
    """CPU seconds per thread of the processes, by (pid, thread id)."""
    import psutil

    out = {}
    for pid in pids:
        for t in psutil.Process(pid).threads():
            out[(pid, t.id)] = t.user_time + t.system_time
    return out


def processes_named(name: str) -> list[int]:
    """Every process whose executable is `name` (Redis, HAProxy: whoever started them)."""
    import psutil

    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == name]


def replica_pids(app: str, deployment: str) -> list[int]:
    """The processes of a Serve deployment's replicas, by the title Ray gives their worker
    (``ray::ServeReplica:<app>:<deployment>``)."""
    import psutil

    title = f"ServeReplica:{app}:{deployment}"
    pids = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(title in part for part in p.info["cmdline"] or ())
    ]
    if not pids:
        raise RuntimeError(f"no process titled {title}: is the application running here?")
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds the processes have used, their threads included."""
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def settle(max_wait_s: float = 60.0) -> None:
    """Wait until the machine is idle again (replicas starting, the previous run's
    after-response work): measure a topology, not the one before it."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        before = _busy()
        time.sleep(2.0)
        after = _busy()
        busy = (after[0] - before[0]) / max(1, after[1] - before[1])
        if busy < 0.15:
            return


def _busy() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


if __name__ == "__main__":
    urllib.request.getproxies()  # no proxy lookups inside the timed loop
    main()

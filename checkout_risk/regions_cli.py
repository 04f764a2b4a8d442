"""Subcommands for regions: `k8s plan|render` and `replicate`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from checkout_risk.cli import UserError

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "k8s"


def _cmd_k8s_plan(args: argparse.Namespace) -> int:
    from checkout_risk.capacity import load_capacity, plan

    try:
        plans = plan(load_capacity())
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    header = (
        f"{'region':<14}{'peak rps':>9}{'failover':>9}{'replicas':>10}"
        f"{'pods':>8}{'redis ops/s':>13}{'shards':>7}{'replicators':>12}"
        f"{'outbox min':>11}"
    )
    print(header)
    for p in plans.values():
        print(
            f"{p.region:<14}{p.peak_rps:>9.0f}{p.failover_rps:>9.0f}"
            f"{f'{p.min_replicas}-{p.max_replicas}':>10}"
            f"{f'{p.min_worker_pods}-{p.max_worker_pods}':>8}"
            f"{p.redis_ops:>13,.0f}{p.redis_shards:>7}{p.replicators:>12}"
            f"{(f'{p.outbox_retention_s / 60:.0f}' if p.outbox_retention_s else '-'):>11}"
        )
    return 0


def _cmd_k8s_render(args: argparse.Namespace) -> int:
    from checkout_risk import k8s

    out = Path(args.out)
    try:
        if args.check:
            problems = k8s.check(out)
            if problems:
                for problem in problems:
                    print(problem, file=sys.stderr)
                raise UserError(
                    f"{out} differs from a fresh render ({len(problems)} file(s)); "
                    f"run `checkout-risk k8s render --out {out}` and commit"
                )
            print(f"{out}: up to date with configs/")
            return 0
        written = k8s.write(out)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    print(f"wrote {len(written)} manifests under {out}")
    return 0


def _destinations(region_name: str, wanted: list[str]) -> list[tuple[str, str]]:
    """(region, Redis URL) per destination, residency enforced."""
    from serve_graph.config import load_region, regions, replication_targets

    try:
        region = load_region(region_name)
        allowed = replication_targets(region, regions())
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    pairs = []
    for item in wanted or allowed:
        name, _, url = item.partition("=")
        if name not in allowed:
            raise UserError(
                f"{region_name}'s online updates may not go to {name}: allowed "
                f"{allowed or 'none'} (data residency, configs/regions/{region_name}.yaml)"
            )
        var = "REDIS_URL_" + name.upper().replace("-", "_")
        url = url or os.environ.get(var, "")
        if not url:
            raise UserError(f"no Redis URL for {name}: pass --to {name}=URL or set {var}")
        pairs.append((name, url))
    if not pairs:
        raise UserError(f"{region_name} sends its updates nowhere (data residency)")
    return pairs


def _cmd_replicate(args: argparse.Namespace) -> int:
    from feature_views.replication import Destination, Replicator
    from feature_views.store import StoreUnavailable, connect, store_url
    from serve_graph.config import load_region
    from serve_graph.pipeline import region_store_url

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    pairs = _destinations(args.region, args.to)
    try:
        region = load_region(args.region)
        source = connect(region_store_url(region, args.source or store_url()), 5.0)
        dests = []
        for name, url in pairs:
            dest_region = load_region(name)
            client = connect(region_store_url(dest_region, url), 5.0)
            dests.append(Destination(name, client, dest_region.namespace))
    except (ValueError, StoreUnavailable) as exc:
        raise UserError(str(exc)) from exc
    rep = Replicator(source, region.namespace, dests, consumer=args.consumer)
    if args.once:
        total = {d.name: [0, 0] for d in dests}
        for dest in dests:
            while True:
                step = rep.step(dest)
                if not step.delivered:
                    break
                total[dest.name][0] += step.delivered
                total[dest.name][1] += step.applied
        for name, (delivered, applied) in total.items():
            print(f"{args.region} -> {name}: {delivered} delivered, {applied} new")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    names = ", ".join(d.name for d in dests)
    logging.info("replicating %s -> %s", args.region, names)
    worker = threading.Thread(target=rep.run, args=(stop,), daemon=True)
    worker.start()
    while not stop.wait(args.report_s):
        logging.info("pending per destination: %s", rep.pending())
    worker.join(timeout=5)
    return 0


def add_regions(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "k8s",
        help="capacity plan and Kubernetes manifests per region",
        description="`plan` prints replicas, worker pods and Redis shards per region from "
        "configs/capacity.yaml; `render` writes k8s/ from configs/ (`--check`: fail if "
        "the committed manifests differ from a fresh render).",
    )
    k8s_sub = p.add_subparsers(dest="k8s_command", metavar="ACTION", required=True)
    plan_p = k8s_sub.add_parser("plan", help="print the capacity plan")
    plan_p.set_defaults(handler=_cmd_k8s_plan)
    render_p = k8s_sub.add_parser("render", help="render the manifests")
    render_p.add_argument("--out", default=str(DEFAULT_OUT), help="folder (default k8s/)")
    render_p.add_argument(
        "--check", action="store_true", help="compare with the folder instead of writing"
    )
    render_p.set_defaults(handler=_cmd_k8s_render)

    p = sub.add_parser(
        "replicate",
        help="ship a region's online feature updates to other regions",
        description="Read the region's replication outbox (a Redis stream) and apply each "
        "update to every destination allowed by data residency, idempotently, "
        "acknowledging only after the destination accepted it. Runs until SIGTERM.",
    )
    p.add_argument("--region", required=True, help="source region (configs/regions/)")
    p.add_argument("--source", default=None, help="source Redis URL (default REDIS_URL)")
    p.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="REGION[=URL]",
        help="destination (repeatable; URL default REDIS_URL_<REGION>; default: every "
        "region residency allows)",
    )
    p.add_argument(
        "--consumer",
        default=os.environ.get("HOSTNAME") or "replicator",
        help="this replicator's name, unique among the region's replicators (default: "
        "$HOSTNAME, the pod name)",
    )
    p.add_argument("--once", action="store_true", help="drain what is pending, then exit")
    p.add_argument("--report-s", type=float, default=30.0, help="progress log interval (s)")
    p.set_defaults(handler=_cmd_replicate)

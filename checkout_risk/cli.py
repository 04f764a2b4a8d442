"""`checkout-risk`: one command line for simulation, features, training and operations.

Each subcommand is a thin adapter: parse arguments, call the owning package, print a
summary. Errors the user can fix (bad arguments, bad tables, unreachable services) print one
line starting with ``error:`` and exit with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]


class UserError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# ---- simulate ---------------------------------------------------------------------------


def _cmd_simulate(args: argparse.Namespace) -> int:
    from simulator.config import ScenarioError, load_scenario
    from simulator.marketplace import SimulationError, simulate

    try:
        scenario = load_scenario(args.scenario)
        regions = [r.strip() for r in args.regions.split(",")] if args.regions else None
        summary = simulate(
            scenario,
            days=args.days,
            tx_per_day=args.tx_per_day,
            seed=args.seed,
            out=args.out,
            regions=regions,
            overwrite=args.overwrite,
            progress=not args.quiet,
            scenario_path=args.scenario,
        )
    except (ScenarioError, SimulationError) as exc:
        raise UserError(str(exc)) from exc
    _print_simulation(summary.as_dict())
    return 0


def _print_simulation(s: dict[str, Any]) -> None:
    rate = s["attempts"] / max(s["seconds"], 1e-9)
    print(f"simulated {s['days']} days -> {s['out']}")
    print(f"  attempts        {s['attempts']:>12,}   ({rate * 60:,.0f} per minute)")
    print(
        f"  fraud attempts  {s['fraud_attempts']:>12,}   "
        f"({s['fraud_attempts'] / max(s['attempts'], 1):.3%})"
    )
    print(f"  labels known    {s['labels']:>12,}")
    print(f"  shoppers        {s['shoppers']:>12,}")
    print(f"  merchants       {s['merchants']:>12,}")
    print(f"  cross-border    {s['cross_border_share']:>12.1%}")
    for name, count in sorted(s["patterns"].items()):
        print(f"    {name:<22}{count:>8,}")


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a synthetic marketplace (attempts, labels, truth)",
        description="Simulate checkout traffic with fraud campaigns and late "
        "chargebacks into date-partitioned Parquet.",
    )
    p.add_argument("--days", type=int, required=True, help="number of UTC days to simulate (> 0)")
    p.add_argument("--tx-per-day", type=int, default=20_000, help="average attempts per day")
    p.add_argument("--seed", type=int, default=7, help="random seed (same seed, same data)")
    p.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    p.add_argument(
        "--scenario", default=None, help="scenario YAML (default configs/simulation/default.yaml)"
    )
    p.add_argument("--regions", default=None, help="comma-separated subset of scenario regions")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_simulate)


# ---- demo (the main job of `make run`) ---------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from checkout_risk import cluster
    from checkout_risk.demo import run
    from trainers.registry import registry_root

    try:
        run(
            Path(args.data),
            args.days,
            args.tx_per_day,
            args.seed,
            registry_root(),
            keep_serving=not args.no_wait,
        )
    except cluster.ClusterError as exc:  # Ray would not start, a job or a deploy failed
        raise UserError(str(exc)) from exc
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job of `make run`: simulate, then exercise the stack",
        description="Simulate a marketplace (reused when present), materialise "
        "the online store and show live feature reads.",
    )
    p.add_argument("--data", default="data/sim", help="where the simulated marketplace lives")
    p.add_argument("--days", type=_positive_int, default=90)
    p.add_argument("--tx-per-day", type=_positive_int, default=4_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="return after the demo instead of serving until interrupted",
    )
    p.set_defaults(handler=_cmd_demo)


# ---- feature views ----------------------------------------------------------------------


def _cmd_features(args: argparse.Namespace) -> int:
    from feature_views.definitions import describe

    print(describe())
    return 0


def _cmd_parity(args: argparse.Namespace) -> int:
    from feature_views.contract import ContractError
    from feature_views.parity import run_parity
    from feature_views.store import StoreUnavailable

    try:
        report = run_parity(args.events, args.labels, limit=args.limit, progress=not args.quiet)
    except (ContractError, StoreUnavailable, FileNotFoundError) as exc:
        raise UserError(str(exc)) from exc
    print(report.render())
    return 0 if report.ok else 1


def _cmd_materialize(args: argparse.Namespace) -> int:
    from feature_views.contract import ContractError
    from feature_views.materialize import materialize
    from feature_views.store import StoreUnavailable

    try:
        result = materialize(args.events, args.labels, progress=not args.quiet, flush=args.flush)
    except (ContractError, StoreUnavailable, FileNotFoundError) as exc:
        raise UserError(str(exc)) from exc
    print(json.dumps(result, indent=2))
    return 0


def _add_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="list every feature view and feature with its meaning",
        description="Print the feature catalogue (feature_views/definitions.py).",
    )
    p.set_defaults(handler=_cmd_features)

    p = sub.add_parser(
        "parity",
        help="replay events through Redis and compare with offline",
        description="Replay attempts one by one through the online engine (real "
        "Redis) and compare every feature with the offline engine.",
    )
    p.add_argument("--events", required=True, help="attempts: Parquet file or folder")
    p.add_argument("--labels", default=None, help="labels: Parquet file or folder")
    p.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="replay only the first N attempts (by time)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_cmd_parity)

    p = sub.add_parser(
        "materialize",
        help="bulk-load the online store from offline history",
        description="Load every attempt and label into the Redis online store "
        "with pipelined, idempotent writes.",
    )
    p.add_argument("--events", required=True, help="attempts: Parquet file or folder")
    p.add_argument("--labels", default=None, help="labels: Parquet file or folder")
    p.add_argument("--flush", action="store_true", help="delete this store namespace's keys first")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_cmd_materialize)


# ---- training, evaluation, registry -----------------------------------------------------


def _training_errors() -> tuple[type[Exception], ...]:
    from feature_views.contract import ContractError
    from serve_graph.decisioning import CostError
    from serve_graph.policy import PolicyError
    from trainers.datasets import DatasetError
    from trainers.registry import RegistryError

    return (DatasetError, RegistryError, ContractError, PolicyError, CostError, FileNotFoundError)


def _cmd_train(args: argparse.Namespace) -> int:
    import warnings

    from trainers.train import train

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = train(
                args.events,
                args.labels,
                args.model_out,
                args.train_start,
                args.train_end,
                args.as_of,
            )
        except _training_errors() as exc:
            raise UserError(str(exc)) from exc
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_score_batch(args: argparse.Namespace) -> int:
    from trainers.train import score_batch

    try:
        result = score_batch(args.model, args.events, args.labels, args.start, args.end, args.out)
    except _training_errors() as exc:
        raise UserError(str(exc)) from exc
    print(json.dumps(result, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trainers.evaluate import write_report
    from trainers.train import evaluate_model

    try:
        report, version = evaluate_model(
            args.model, args.events, args.labels, args.start, args.end, args.truth, args.fallback
        )
    except _training_errors() as exc:
        raise UserError(str(exc)) from exc
    out = Path(args.out or f"reports/evaluation-{version}{'-fallback' if args.fallback else ''}")
    json_path, html_path = write_report(
        report, out, f"Evaluation of {report['model_version']} on [{args.start}, {args.end})"
    )
    o = report["overall"]
    c = o["cost_per_1000"]
    print(
        f"{report['model_version']} on [{args.start}, {args.end}): {o['attempts']:,} attempts,"
        f" {o['fraud']:,} fraud ({report['window']['targets']})"
    )
    print(
        f"  PR-AUC {o['pr_auc']:.4f}  ROC-AUC {o['roc_auc']:.4f}  recall@1% decline "
        f"{o['recall_at_1pct_decline']:.3f}"
    )
    print(
        f"  cost per 1,000 attempts: model ${c['model']:,.2f}  rules-only "
        f"${c['rules_only']:,.2f}  approve-all ${c['approve_all']:,.2f}"
    )
    print(f"  report: {json_path}  {html_path}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from trainers.promotion import promote

    try:
        ok, lines = promote(
            args.version,
            args.stage,
            args.events,
            args.labels,
            args.start,
            args.end,
            args.truth,
            args.force,
        )
    except _training_errors() as exc:
        raise UserError(str(exc)) from exc
    for line in lines:
        print(line)
    return 0 if ok else 1


def _cmd_rollback(args: argparse.Namespace) -> int:
    from trainers.registry import Registry, RegistryError

    try:
        was, now = Registry().rollback()
    except RegistryError as exc:
        raise UserError(str(exc)) from exc
    print(f"champion rolled back: {was} -> {now}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from trainers.registry import Registry

    reg = Registry()
    stages = reg.state()["stages"]
    by_version = {v: s for s, v in stages.items() if v}
    for version in reg.versions():
        print(f"{version:<32} {by_version.get(version, '')}")
    if not reg.versions():
        print(f"no model versions in {reg.root}")
    return 0


def _add_training(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model version on matured labels (no cluster)",
        description="Point-in-time features, label maturity, CatBoost with a "
        "request-only fallback; writes an immutable registry version.",
    )
    p.add_argument("--events", required=True, help="attempts: Parquet file or folder")
    p.add_argument("--labels", required=True, help="labels: Parquet file or folder")
    p.add_argument("--model-out", required=True, help="new version folder, e.g. models/v1")
    p.add_argument("--train-start", default=None, help="ISO date, inclusive (UTC)")
    p.add_argument(
        "--train-end",
        default=None,
        help="ISO date, exclusive (default: as-of minus label maturity)",
    )
    p.add_argument("--as-of", default=None, help="ISO date the labels are known up to")
    p.add_argument(
        "--decision-log",
        default=None,
        help="decision log folder: served attempts train on their logged vectors",
    )
    p.set_defaults(handler=_cmd_train)

    def window(p: argparse.ArgumentParser, labels_required: bool) -> None:
        p.add_argument(
            "--events",
            required=True,
            help="attempts: Parquet file or folder (the whole history: features are point-in-time)",
        )
        p.add_argument(
            "--labels",
            required=labels_required,
            default=None,
            help="labels: Parquet file or folder",
        )
        p.add_argument("--start", required=True, help="ISO date, inclusive (UTC)")
        p.add_argument("--end", required=True, help="ISO date, exclusive (UTC)")

    p = sub.add_parser(
        "score-batch",
        help="score a window of attempts with a model version",
        description="Write transaction_id, score (p(fraud)) and action for "
        "the attempts in [start, end).",
    )
    p.add_argument("--model", required=True, help="version folder or registry version name")
    window(p, labels_required=False)
    p.add_argument("--out", required=True, help="output Parquet file")
    p.set_defaults(handler=_cmd_score_batch)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a model version by cost, PR and segment",
        description="PR-AUC, ROC-AUC, recall at decline rates, card "
        "precision@100, cost per 1,000 attempts vs approve-all and rules-only, "
        "calibration; overall and per segment. JSON + HTML.",
    )
    p.add_argument("--model", required=True, help="version folder or registry version name")
    window(p, labels_required=True)
    p.add_argument(
        "--truth",
        default=None,
        help="simulator truth folder: complete targets instead of known labels",
    )
    p.add_argument("--fallback", action="store_true", help="evaluate the fallback model")
    p.add_argument("--out", default=None, help="report folder (default reports/...)")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser(
        "promote",
        help="move a version to shadow, canary or champion",
        description="Promotion to champion must beat the current champion on "
        "the same window by expected cost without regressing any segment "
        "beyond the tolerance in configs/training/promotion.yaml.",
    )
    p.add_argument("version")
    p.add_argument("--stage", required=True, choices=["shadow", "canary", "champion"])
    p.add_argument("--events", default=None, help="attempts for the comparison window")
    p.add_argument("--labels", default=None, help="labels for the comparison window")
    p.add_argument("--start", default=None, help="comparison window start (ISO date)")
    p.add_argument("--end", default=None, help="comparison window end (ISO date, exclusive)")
    p.add_argument("--truth", default=None, help="simulator truth folder")
    p.add_argument("--force", action="store_true", help="promote even if the gate refuses")
    p.set_defaults(handler=_cmd_promote)

    p = sub.add_parser(
        "rollback",
        help="make the previous champion the champion again",
        description="Instant: rewrites the registry's stage file.",
    )
    p.set_defaults(handler=_cmd_rollback)

    p = sub.add_parser(
        "models",
        help="list registry versions and their stages",
        description="List model versions under models/ (CHECKOUT_RISK_MODELS).",
    )
    p.set_defaults(handler=_cmd_models)


# ---- the local Ray cluster and the retraining job ---------------------------------------


def _cmd_cluster(args: argparse.Namespace) -> int:
    from checkout_risk import cluster

    if args.action == "up":
        try:
            address = cluster.up()
        except cluster.ClusterError as exc:
            raise UserError(str(exc)) from exc
        print(f"Ray cluster up: GCS {address}, jobs and dashboard {cluster.JOBS_URL}")
    elif args.action == "down":
        cluster.down()
        print("Ray cluster stopped")
    else:
        print("up" if cluster.is_up() else "down")
        return 0 if cluster.is_up() else 1
    return 0


def resolved_training_config(config: str, overrides: dict[str, Any]) -> Path:
    """The config with absolute paths filled in, saved under .run/ for job submission."""
    import time

    import yaml

    from feature_views.store import run_dir

    raw = yaml.safe_load(Path(config).read_text())
    raw.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("events", "labels", "registry"):
        if "://" not in str(raw[key]):
            raw[key] = str(Path(raw[key]).resolve())
    out = run_dir() / f"retrain-{int(time.time())}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(raw))
    return out


def _cmd_retrain(args: argparse.Namespace) -> int:
    from checkout_risk import cluster

    path = resolved_training_config(
        args.config,
        {
            "events": args.events,
            "labels": args.labels,
            "registry": args.registry,
            "workers": args.workers,
        },
    )
    try:
        cluster.up()
    except cluster.ClusterError as exc:
        raise UserError(str(exc)) from exc
    print(f"submitting retraining job ({path}) to {cluster.JOBS_URL}")
    return cluster.submit(["python", "-m", "trainers.retrain", "--config", str(path)])


def _add_cluster(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="start, stop or check the local Ray cluster",
        description="The local Ray head node (GCS 127.0.0.1:6390, job API and "
        "dashboard 127.0.0.1:8265, token auth).",
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(handler=_cmd_cluster)

    p = sub.add_parser(
        "retrain",
        help="submit the Ray Train retraining job to the cluster",
        description="`ray job submit` of trainers.retrain with the config's "
        "paths made absolute; starts the local cluster if needed.",
    )
    p.add_argument("--config", default="configs/training/default.yaml")
    p.add_argument("--events", default=None, help="override the config's attempts path")
    p.add_argument("--labels", default=None, help="override the config's labels path")
    p.add_argument("--registry", default=None, help="override the config's registry path")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="Ray Train workers (models on shards are averaged)",
    )
    p.set_defaults(handler=_cmd_retrain)


# ---- serving: decision log, replay, keys ------------------------------------------------


def _default_log_root() -> Path:
    from feature_views.store import run_dir

    return run_dir() / "decision-log"


def _cmd_verify_log(args: argparse.Namespace) -> int:
    from serve_graph.decision_log import verify

    root = Path(args.log or _default_log_root())
    if not root.exists():
        raise UserError(f"no decision log at {root}")
    report = verify(root)
    for problem in report.problems:
        print(f"TAMPERED {problem}")
    status = "verifies" if report.ok else f"FAILS: {len(report.problems)} problem(s)"
    print(
        f"decision log {root}: {report.streams} stream(s), {report.records:,} records, "
        f"chain {status}"
    )
    return 0 if report.ok else 1


def _cmd_replay(args: argparse.Namespace) -> int:
    from serve_graph.replay import ReplayError, replay

    try:
        result = replay(args.decision_id, Path(args.log or _default_log_root()))
    except ReplayError as exc:
        raise UserError(str(exc)) from exc
    print(
        json.dumps(
            {
                "decision_id": result.decision_id,
                "logged": result.logged,
                "replayed": result.replayed,
                "reproduced": result.ok,
                "mismatches": result.mismatches,
            },
            indent=2,
        )
    )
    return 0 if result.ok else 1


def _cmd_dev_key(args: argparse.Namespace) -> int:
    from serve_graph.config import dev_key

    print(dev_key())
    return 0


def _add_serving(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify-log",
        help="verify the hash chain of the decision log",
        description="Walk every stream of the decision log and name each record "
        "that was edited, deleted, reordered, inserted or truncated.",
    )
    p.add_argument("--log", default=None, help="log folder (default .run/decision-log)")
    p.set_defaults(handler=_cmd_verify_log)

    p = sub.add_parser(
        "replay",
        help="reproduce a logged decision and its explanation",
        description="Score the logged features with the logged model version, "
        "combine with the logged policy result and costs, recompute SHAP "
        "reasons, and compare with the log.",
    )
    p.add_argument("decision_id")
    p.add_argument("--log", default=None, help="log folder (default .run/decision-log)")
    p.set_defaults(handler=_cmd_replay)

    p = sub.add_parser(
        "dev-key",
        help="print the local development API key",
        description="The key for X-API-Key on the local deployment "
        "(created on first use in .run/dev-key).",
    )
    p.set_defaults(handler=_cmd_dev_key)


# ---- monitoring: drift, quality, guardrails ---------------------------------------------


def _add_monitoring(sub: argparse._SubParsersAction) -> None:
    from monitoring.jobs import add_subcommands

    add_subcommands(sub)


# ---- main -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="checkout-risk",
        description="Real-time checkout risk scoring: simulate, build features, train, serve.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(sub)
    _add_simulate(sub)
    _add_features(sub)
    _add_training(sub)
    _add_cluster(sub)
    _add_serving(sub)
    _add_monitoring(sub)
    from checkout_risk.regions_cli import add_regions

    add_regions(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

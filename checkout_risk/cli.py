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
    from pathlib import Path

    from simulator.config import load_scenario
    from simulator.marketplace import simulate

    out = Path(args.data)
    manifest = out / "_SUCCESS.json"
    wanted = {"days": args.days, "tx_per_day": args.tx_per_day, "seed": args.seed}
    if manifest.exists() and all(
        json.loads(manifest.read_text()).get(k) == v for k, v in wanted.items()
    ):
        print(f"reusing simulated marketplace in {out} (delete it to regenerate)")
        _print_simulation(json.loads(manifest.read_text()))
    else:
        summary = simulate(
            load_scenario(),
            days=args.days,
            tx_per_day=args.tx_per_day,
            seed=args.seed,
            out=out,
            overwrite=True,
        )
        _print_simulation(summary.as_dict())
    from feature_views.demo import run_feature_demo

    run_feature_demo(out)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job of `make run`: simulate, then exercise the stack",
        description="Simulate a marketplace (reused when present), materialise "
        "the online store and show live feature reads.",
    )
    p.add_argument("--data", default="data/sim", help="where the simulated marketplace lives")
    p.add_argument("--days", type=_positive_int, default=60)
    p.add_argument("--tx-per-day", type=_positive_int, default=5_000)
    p.add_argument("--seed", type=int, default=7)
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

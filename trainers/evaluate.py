"""Offline evaluation: ranking, cost, calibration — overall and per segment.

A model is judged by what it would cost the marketplace, not only by how it ranks: every
report compares the model's expected-cost policy (with the champion rules on top) against
approving everything and against the rules alone, per 1,000 attempts, under
``configs/costs.yaml``. Cold-start segments (young merchants, new cards, new devices) are
reported separately because that is where models usually fail.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serve_graph.combiner import combine_frame
from serve_graph.decisioning import ACTIONS, Costs, realized_costs
from serve_graph.policy import Policy, rules_only_actions

AMOUNT_BANDS = (0, 10, 100, 500, math.inf)
AMOUNT_LABELS = ("<$10", "$10-100", "$100-500", "$500+")


def segments(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Segment label per row, for each segmentation we report."""
    age = frame["merchant_age_days"].to_numpy()
    return {
        "region": frame["region"].astype(str).to_numpy(),
        "cross_border": np.where(frame["is_cross_border"] == 1, "cross-border", "domestic"),
        "merchant_age": np.where((age >= 0) & (age < 30), "merchant <30d", "merchant 30d+"),
        "new_card": np.where(frame["card_activity_missing"] == 1, "new card", "known card"),
        "new_device": np.where(frame["device_activity_missing"] == 1, "new device", "known device"),
        "amount_band": pd.cut(frame["amount_usd"], AMOUNT_BANDS, labels=AMOUNT_LABELS, right=False)
        .astype(str)
        .to_numpy(),
    }


def _recall_at_decline(score: np.ndarray, y: np.ndarray, rate: float) -> float | None:
    if y.sum() == 0:
        return None
    k = max(1, int(math.ceil(rate * len(score))))
    top = np.argsort(-score, kind="stable")[:k]
    return float(y[top].sum() / y.sum())


def card_precision_at_k(
    frame: pd.DataFrame, score: np.ndarray, y: np.ndarray, k: int = 100
) -> float | None:
    """Mean over days of the share of the day's k riskiest cards that had fraud that day."""
    cards = pd.DataFrame(
        {
            "day": frame["event_time"].dt.floor("D").to_numpy(),
            "card": frame["card_id"].to_numpy(),
            "score": score,
            "y": y,
        }
    )
    per_card = cards.groupby(["day", "card"]).agg(score=("score", "max"), y=("y", "max"))
    per_day = []
    for _, day in per_card.groupby(level="day"):
        top = day.nlargest(min(k, len(day)), "score")
        per_day.append(top["y"].mean())
    return float(np.mean(per_day)) if per_day else None


def calibration(score: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Brier score, expected calibration error, and a reliability table by score decile."""
    if len(score) == 0:
        return {}
    edges = np.unique(np.quantile(score, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, max(len(edges) - 2, 0))
    table = []
    ece = 0.0
    for b in np.unique(which):
        rows = which == b
        predicted, observed = float(score[rows].mean()), float(y[rows].mean())
        ece += rows.mean() * abs(predicted - observed)
        table.append(
            {
                "predicted": round(predicted, 6),
                "observed": round(observed, 6),
                "attempts": int(rows.sum()),
            }
        )
    return {
        "brier": float(np.mean((score - y) ** 2)),
        "ece": float(ece),
        "mean_predicted": float(score.mean()),
        "observed_rate": float(y.mean()),
        "reliability": table,
    }


def _metrics(
    frame: pd.DataFrame,
    score: np.ndarray,
    y: np.ndarray,
    actions: dict[str, np.ndarray],
    costs: Costs,
    detail: bool,
) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    both = 0 < y.sum() < len(y)
    out: dict[str, Any] = {
        "attempts": int(len(y)),
        "fraud": int(y.sum()),
        "fraud_rate": float(y.mean()) if len(y) else 0.0,
        "pr_auc": float(average_precision_score(y, score)) if both else None,
        "roc_auc": float(roc_auc_score(y, score)) if both else None,
        "recall_at_0.5pct_decline": _recall_at_decline(score, y, 0.005),
        "recall_at_1pct_decline": _recall_at_decline(score, y, 0.01),
    }
    amount = frame["amount_usd"].to_numpy()
    region = frame["region"].to_numpy()
    out["cost_per_1000"] = {
        name: float(realized_costs(costs, a, y, amount, region).sum() / max(len(y), 1) * 1000)
        for name, a in actions.items()
    }
    out["action_rates"] = {a: float(np.mean(actions["model"] == a)) for a in ACTIONS}
    out["block_rates"] = {name: float(np.mean(a == "block")) for name, a in actions.items()}
    if detail:
        out["card_precision_at_100_per_day"] = card_precision_at_k(frame, score, y)
        out["calibration"] = calibration(score, y)
    else:
        cal = calibration(score, y)
        out["calibration"] = {
            k: cal.get(k) for k in ("brier", "ece", "mean_predicted", "observed_rate")
        }
    return out


def evaluate_scores(
    frame: pd.DataFrame, score: np.ndarray, y: np.ndarray, policy: Policy, costs: Costs
) -> dict[str, Any]:
    """The full report as a dict: overall and per segment."""
    y = np.asarray(y, dtype=np.int64)
    model_actions, _ = combine_frame(frame, score, policy, costs)
    actions = {
        "model": model_actions,
        "approve_all": np.full(len(y), "approve", dtype=object),
        "rules_only": rules_only_actions(policy, frame),
    }
    report: dict[str, Any] = {
        "overall": _metrics(frame, score, y, actions, costs, True),
        "segments": {},
    }
    for name, labels in segments(frame).items():
        report["segments"][name] = {}
        for value in sorted(set(labels)):
            rows = labels == value
            sub = frame[rows]
            report["segments"][name][value] = _metrics(
                sub, score[rows], y[rows], {k: v[rows] for k, v in actions.items()}, costs, False
            )
    report["curves"] = _curves(frame, score, y, costs)
    return report


def _curves(frame: pd.DataFrame, score: np.ndarray, y: np.ndarray, costs: Costs) -> dict[str, Any]:
    from sklearn.metrics import precision_recall_curve

    out: dict[str, Any] = {}
    if 0 < y.sum() < len(y):
        precision, recall, _ = precision_recall_curve(y, score)
        # one point per recall step (each fraud caught), thinned to at most ~300: sampling
        # by index would keep only the crowd of low thresholds and flatten the top
        _, first = np.unique(recall, return_index=True)
        keep = np.sort(first)[:: max(1, len(first) // 300)]
        out["pr"] = {
            "precision": precision[keep].round(5).tolist(),
            "recall": recall[keep].round(5).tolist(),
        }
    order = np.argsort(-score, kind="stable")
    amount, region = frame["amount_usd"].to_numpy(), frame["region"].to_numpy()
    rates = [0.0, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05]
    cost = []
    for r in rates:
        acts = np.full(len(y), "approve", dtype=object)
        acts[order[: int(round(r * len(y)))]] = "block"
        cost.append(
            float(realized_costs(costs, acts, y, amount, region).sum() / max(len(y), 1) * 1000)
        )
    out["cost_vs_decline_rate"] = {"decline_rate": rates, "cost_per_1000": cost}
    return out


def _figure(report: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    curves = report["curves"]
    if "pr" in curves:
        axes[0].plot(curves["pr"]["recall"], curves["pr"]["precision"])
    axes[0].set(
        xlabel="recall",
        ylabel="precision",
        title=f"PR curve (PR-AUC {report['overall']['pr_auc'] or 0:.3f})",
    )
    cv = curves["cost_vs_decline_rate"]
    axes[1].plot(
        np.array(cv["decline_rate"]) * 100,
        cv["cost_per_1000"],
        marker="o",
        label="block top-scored",
    )
    for name, style in (("model", "g*"), ("rules_only", "rs"), ("approve_all", "k^")):
        cost = report["overall"]["cost_per_1000"][name]
        rate = report["overall"]["block_rates"][name] * 100
        axes[1].plot([rate], [cost], style, markersize=10, label=name.replace("_", " "))
    axes[1].set(
        xlabel="decline rate (%)",
        ylabel="USD per 1,000 attempts",
        title="Cost against decline rate",
    )
    axes[1].legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return html.escape(str(value))


def write_report(report: dict[str, Any], out_dir: Path, title: str) -> tuple[Path, Path]:
    """evaluation.json and evaluation.html (tables plus PR and cost curves)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "evaluation.json"
    json_path.write_text(json.dumps(report, indent=2, default=float))
    o = report["overall"]
    rows = []
    for seg, values in report["segments"].items():
        for value, m in values.items():
            c = m["cost_per_1000"]
            rows.append(
                f"<tr><td>{seg}</td><td>{html.escape(value)}</td>"
                f"<td>{m['attempts']:,}</td><td>{m['fraud']:,}</td>"
                f"<td>{_fmt(m['pr_auc'])}</td><td>{_fmt(m['roc_auc'])}</td>"
                f"<td>{_fmt(m['recall_at_1pct_decline'])}</td>"
                f"<td>{_fmt(c['model'])}</td><td>{_fmt(c['rules_only'])}</td>"
                f"<td>{_fmt(c['approve_all'])}</td></tr>"
            )
    c = o["cost_per_1000"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p><b>{o["attempts"]:,}</b> attempts, <b>{o["fraud"]:,}</b> fraud
({o["fraud_rate"]:.3%}). PR-AUC <b>{_fmt(o["pr_auc"])}</b>, ROC-AUC {_fmt(o["roc_auc"])},
recall at 0.5% / 1% decline rate {_fmt(o["recall_at_0.5pct_decline"])} /
{_fmt(o["recall_at_1pct_decline"])}, card precision@100 per day
{_fmt(o["card_precision_at_100_per_day"])}.</p>
<p>Cost per 1,000 attempts: model <b>${c["model"]:,.2f}</b>, rules only
${c["rules_only"]:,.2f}, approve all ${c["approve_all"]:,.2f}.
Calibration: Brier {_fmt(o["calibration"]["brier"])}, ECE {_fmt(o["calibration"]["ece"])}.</p>
<img src="data:image/png;base64,{_figure(report)}" alt="PR and cost curves">
<h2>By segment</h2><table><tr><th>segment</th><th>value</th><th>attempts</th><th>fraud</th>
<th>PR-AUC</th><th>ROC-AUC</th><th>recall@1%</th><th>model $/1k</th><th>rules $/1k</th>
<th>approve-all $/1k</th></tr>{"".join(rows)}</table></body></html>"""
    html_path = out_dir / "evaluation.html"
    html_path.write_text(page)
    return json_path, html_path

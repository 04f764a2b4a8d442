"""Writing reports: JSON for machines, HTML for people, Evidently's pages for details.

Layout: ``reports/<kind>-<UTC stamp>/report.json``, ``report.html`` and
``evidently/<scope>.html|json``. The HTML opens with the verdict and the alert table
(what, where, since when), then the windows and how they were sampled, then the
per-scope tables and the per-day timeline; Evidently's own pages hold the distributions.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left;font-size:13px;vertical-align:top}th{background:#f3f3f3}
.ok{background:#e6f4ea}.alert{background:#fde2e1}.muted{color:#777}
.verdict{font-size:20px;padding:10px 14px;border-radius:6px;display:inline-block}
.cell{width:34px;text-align:center;font-size:11px}
"""


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "scope"


def out_dir(root: str | Path, kind: str) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = Path(root) / f"{kind}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{kind}-{stamp}-{n}"
    path.mkdir(parents=True)
    return path


def _e(value: Any) -> str:
    if value is None:
        return '<span class="muted">–</span>'
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return '<span class="muted">–</span>' if value is None else f"{value:.1%}"


def alert_table(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return '<p class="verdict ok">No alerts: every check is within its threshold.</p>'
    rows = "".join(
        f"<tr class='alert'><td>{_e(a['kind'])}</td><td>{_e(a['scope'])}</td>"
        f"<td>{_e(a.get('since'))}</td><td>{'<br>'.join(_e(r) for r in a['reasons'])}</td></tr>"
        for a in alerts
    )
    since = [
        f"{html.escape(a['scope'])} since {html.escape(a['since'])}"
        if a.get("since")
        else html.escape(a["scope"])
        for a in alerts
    ]
    features: list[str] = []
    for a in alerts:
        features += [f for f in a.get("drifted_features", [])[:3] if f not in features]
    headline = "; ".join(dict.fromkeys(since))
    if features:
        headline += f" — most drifted: {html.escape(', '.join(features[:6]))}"
    return (
        f'<p class="verdict alert">{len(alerts)} alert(s): {headline}</p>'
        "<table><tr><th>check</th><th>where</th><th>since</th><th>what</th></tr>"
        f"{rows}</table>"
    )


def context_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def drift_sections(payload: dict[str, Any], links: dict[str, str]) -> str:
    rows = []
    for s in payload["scopes"]:
        cls = "alert" if s["alert"] else "ok"
        score = (s["prediction"]["score"] or {}).get("score")
        mix = (s["prediction"]["actions"] or {}).get("score")
        rates = s.get("action_rates") or {}
        cur, ref = rates.get("current", {}), rates.get("reference", {})
        change = ", ".join(
            f"{a} {_pct(ref.get(a))}→{_pct(cur.get(a))}" for a in ("approve", "step_up", "block")
        )
        link = f" <a href='{links[s['scope']]}'>details</a>" if s["scope"] in links else ""
        since = payload["since"].get(s["scope"])
        rows.append(
            f"<tr class='{cls}'><td>{_e(s['scope'])}{link}</td>"
            f"<td>{s['rows']['reference']:,} / {s['rows']['current']:,}"
            f"{'' if s['eligible'] else ' (too few to alert)'}</td>"
            f"<td>{_pct(s['drifted_share'])}</td>"
            f"<td>{_e(', '.join(s['drifted_features'][:6]))}</td>"
            f"<td>{_e(score)}</td><td>{_e(mix)} <span class='muted'>{change}</span></td>"
            f"<td>{_e(since)}</td></tr>"
        )
    table = (
        "<h2>By scope</h2><table><tr><th>scope</th><th>rows ref / current</th>"
        "<th>features drifted</th><th>most drifted</th><th>score drift</th>"
        "<th>action mix drift</th><th>drifting since</th></tr>" + "".join(rows) + "</table>"
    )
    return table + timeline_grid(payload["timeline"]) + feature_table(payload)


def timeline_grid(timeline: dict[str, list[dict[str, Any]]]) -> str:
    if not any(timeline.values()):
        return ""
    days = sorted({p["day"] for points in timeline.values() for p in points})
    head = "".join(f"<th class='cell'>{d[5:]}</th>" for d in days)
    rows = []
    for name, points in timeline.items():
        by_day = {p["day"]: p for p in points}
        cells = []
        for d in days:
            p = by_day.get(d)
            if p is None:
                cells.append("<td class='cell muted'>·</td>")
                continue
            cls = "alert" if p["drifting"] else "ok"
            tip = html.escape(
                f"{d}: {p['rows']} decisions, {p['drifted_share']:.0%} drifted, score drift "
                f"{p['score_drift']}, top {', '.join(p['top_features'])}"
            )
            cells.append(f"<td class='cell {cls}' title='{tip}'>{p['drifted_share']:.0%}</td>")
        rows.append(f"<tr><td>{_e(name)}</td>{''.join(cells)}</tr>")
    return (
        "<h2>Per-day drift (share of the watched features drifted; red = drifting)</h2>"
        f"<table><tr><th>scope</th>{head}</tr>{''.join(rows)}</table>"
    )


def feature_table(payload: dict[str, Any]) -> str:
    scopes = [s for s in payload["scopes"] if s["columns"]]
    if not scopes:
        return ""
    features = list(scopes[0]["columns"])
    head = "".join(f"<th>{_e(s['scope'])}</th>" for s in scopes)
    rows = []
    for f in features:
        cells = []
        for s in scopes:
            c = s["columns"].get(f)
            if c is None:
                cells.append("<td class='muted'>–</td>")
            else:
                cls = "alert" if c["drifted"] else ""
                cells.append(f"<td class='{cls}'>{c['score']:.3f}</td>")
        rows.append(f"<tr><td>{_e(f)}</td>{''.join(cells)}</tr>")
    return (
        "<h2>Drift distance per feature and scope</h2>"
        "<p class='muted'>Wasserstein (normed) for numbers, Jensen-Shannon for categories; "
        "red = at or above the threshold.</p>"
        f"<table><tr><th>feature</th>{head}</tr>{''.join(rows)}</table>"
    )


def guardrail_sections(payload: dict[str, Any]) -> str:
    rows = []
    for s in payload["segments"]:
        cls = "alert" if s["alerts"] else "ok"
        cells = "".join(
            f"<td>{_pct(s['baseline'].get(a))} → {_pct(s['current'].get(a))}</td>"
            for a in ("approve", "step_up", "block")
        )
        rows.append(
            f"<tr class='{cls}'><td>{_e(s['scope'])}</td>"
            f"<td>{s['rows']['baseline']:,} / {s['rows']['current']:,}</td>{cells}</tr>"
        )
    out = (
        "<h2>Action rates: baseline → current</h2><table><tr><th>scope</th>"
        "<th>rows baseline / current</th><th>approve</th><th>step_up</th><th>block</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    out += "<h2>Degradation ladder</h2>" + context_table(
        {f"rung {k}": _pct(v) for k, v in payload["rung_share"].items()}
        | {"stale-feature rate": _pct(payload["stale_feature_rate"])}
        | {f"reason: {k}": v for k, v in payload["degraded_reasons"].items()}
    )
    lat = payload["latency_p99_ms"]
    note = "" if payload["stage_timings_present"] else " (records carry no per-stage timings)"
    out += f"<h2>p99 latency, ms{note}</h2>" + context_table(lat)
    shadow = payload["shadow"]
    rows = {"decisions with a shadow score": f"{shadow['decisions']:,}"}
    if shadow["decisions"]:
        rows["disagreement (different final action)"] = _pct(shadow["disagreement"])
        for who in ("champion", "shadow"):
            rates = shadow[f"{who}_rates"]
            rows[f"{who} actions"] = ", ".join(f"{a} {_pct(v)}" for a, v in rates.items())
    out += "<h2>Shadow vs champion</h2>" + context_table(rows)
    return out


def quality_sections(payload: dict[str, Any]) -> str:
    cols = (
        "attempts",
        "fraud",
        "pr_auc",
        "roc_auc",
        "recall_flagged",
        "precision_flagged",
        "precision_blocked",
        "flag_rate",
    )
    rows = "".join(
        f"<tr class='{'alert' if s['alerts'] else ''}'><td>{_e(s['scope'])}</td>"
        + "".join(f"<td>{_e(s.get(c))}</td>" for c in cols)
        + "</tr>"
        for s in payload["segments"]
    )
    days = "".join(
        f"<tr><td>{d['day']}</td><td>{d['age_days']}</td><td>{_pct(d['label_completeness'])}</td>"
        f"<td>{d['decisions']:,}</td><td>{d['fraud_labels']}</td></tr>"
        for d in payload["days"]
    )
    return (
        "<h2>Quality by segment</h2><table><tr><th>scope</th>"
        + "".join(f"<th>{c}</th>" for c in cols)
        + f"</tr>{rows}</table><h2>Label maturity per day</h2><table><tr><th>day</th>"
        "<th>age at as-of, days</th><th>labels arrived (est.)</th><th>decisions</th>"
        f"<th>fraud labels</th></tr>{days}</table>"
    )


def write(
    directory: Path,
    kind: str,
    title: str,
    payload: dict[str, Any],
    context: dict[str, Any],
    snapshots: dict[str, Any],
) -> tuple[Path, Path]:
    """report.json, report.html and Evidently's pages under `directory`."""
    links = {}
    if snapshots:
        (directory / "evidently").mkdir(exist_ok=True)
    for name, snap in snapshots.items():
        base = directory / "evidently" / slug(name)
        snap.save_html(str(base.with_suffix(".html")))
        snap.save_json(str(base.with_suffix(".json")))
        links[name] = f"evidently/{slug(name)}.html"
    doc = {"kind": kind, "title": title, "context": context, **payload, "evidently": links}
    json_path = directory / "report.json"
    json_path.write_text(json.dumps(doc, indent=2, default=str))
    body = {
        "drift": lambda: drift_sections(payload, links),
        "guardrails": lambda: guardrail_sections(payload),
        "quality": lambda: quality_sections(payload),
    }[kind]()
    evidently = "".join(
        f"<li><a href='{href}'>{html.escape(name)}</a></li>" for name, href in links.items()
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"{alert_table(payload['alerts'])}<h2>What was compared</h2>{context_table(context)}"
        f"{body}"
        + (f"<h2>Evidently reports</h2><ul>{evidently}</ul>" if evidently else "")
        + "</body></html>"
    )
    html_path = directory / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return json_path, html_path

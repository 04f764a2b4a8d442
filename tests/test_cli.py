"""The `checkout-risk` command line: every subcommand documents itself and fails clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from checkout_risk.cli import build_parser, main


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_expected_subcommands_exist() -> None:
    assert {"demo", "simulate", "features", "parity", "materialize"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "checkout_risk.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: checkout-risk" in result.stdout and len(result.stdout) > 100


def test_features_prints_the_catalogue(capsys) -> None:
    assert main(["features"]) == 0
    out = capsys.readouterr().out
    assert "card_count_10m" in out and "merchant_fraud_rate_90d" in out


def test_missing_table_is_one_clear_line(tmp_path, capsys) -> None:
    code = main(["parity", "--events", str(tmp_path / "nope"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: no such table: {tmp_path / 'nope'}"]


def test_materialize_bad_table_is_one_clear_line(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    code = main(["materialize", "--events", str(bad), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "not a readable Parquet table" in err


def test_the_demo_reports_a_cluster_failure_as_one_error_line(monkeypatch, capsys) -> None:
    """`make run` runs the demo: when Ray will not start, a job fails or a deploy is
    refused, it ends with the cluster's own reason on an `error:` line and exit status 2,
    as `checkout-risk cluster up` does, not in a traceback."""
    from checkout_risk import cluster, demo

    def refused(*_args, **_kwargs) -> None:
        raise cluster.ClusterError("serve deploy failed: ValueError: bad config\n<CLI output>")

    monkeypatch.setattr(demo, "run", refused)
    assert main(["demo", "--no-wait"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "error: serve deploy failed: ValueError: bad config"

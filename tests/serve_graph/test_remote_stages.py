"""The remote stand-ins' own logic, without a cluster: what they ask their deployment."""

from __future__ import annotations

import pytest

from serve_graph.deployments import RemoteShadowScorer, fused_app


class _Counting(RemoteShadowScorer):
    def __init__(self, answers: list) -> None:
        super().__init__(handle=None, timeout_s=1.0)
        self.answers, self.calls = answers, 0

    def _call(self, method: str, *args):
        assert method == "has_shadow"
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_shadow_presence_is_asked_once_per_recheck_interval(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("serve_graph.deployments.time.monotonic", lambda: clock[0])
    stand_in = _Counting([False, True])
    assert [stand_in.has_shadow() for _ in range(50)] == [False] * 50
    assert stand_in.calls == 1  # not two hops per batch
    clock[0] += stand_in.recheck_s
    assert stand_in.has_shadow() is True and stand_in.calls == 2


def test_an_unreachable_shadow_deployment_counts_as_no_shadow(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("serve_graph.deployments.time.monotonic", lambda: clock[0])
    stand_in = _Counting([TimeoutError("hop timed out"), True])
    assert stand_in.has_shadow() is False
    clock[0] += stand_in.recheck_s
    assert stand_in.has_shadow() is True


def test_fused_app_names_where_shap_runs() -> None:
    with pytest.raises(ValueError, match="explainer"):
        fused_app({"region": "us-east", "explainer": "elsewhere"})

"""The remote stand-ins' own logic, without a cluster: what they ask their deployment."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from serve_graph.decisioning import DEFAULT_COSTS
from serve_graph.deployments import (
    GraphIngress,
    RemoteShadowScorer,
    _Remote,
    fused_app,
    graph_app,
    graph_hops,
    hop_deployments,
)
from serve_graph.policy import CHAMPION_POLICY
from serve_graph.stages import DecisionCombiner, FeatureBatch, PolicyEngine


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


def _bound(app) -> list:
    """The handles' deployment names bound into a graph's ingress, None for in-process."""
    args = app._bound_deployment.init_args
    return [None if a is None else a._bound_deployment.name for a in args[:4]]


def test_the_graph_binds_a_deployment_per_named_hop_and_runs_the_rest_in_process() -> None:
    every = _bound(graph_app({"region": "us-east"}))
    assert every == [
        "FeatureLookupDeployment",
        "PolicyDeployment",
        "ScorerDeployment",
        "CombinerDeployment",
    ]
    two = _bound(graph_app({"region": "us-east", "hops": ["scorer", "features"]}))
    assert two == ["FeatureLookupDeployment", None, "ScorerDeployment", None]
    # what a serve config must list for it, the ingress first, in pipeline order
    assert hop_deployments("scorer,features") == [
        "GraphIngress",
        "FeatureLookupDeployment",
        "ScorerDeployment",
    ]


@pytest.mark.parametrize("hops", [[], "", ["scorer", "explainer"], "policy,nope", 3])
def test_unknown_or_empty_hops_are_refused_by_name(hops) -> None:
    with pytest.raises(ValueError, match="hops"):
        graph_hops(hops)
    with pytest.raises(ValueError, match="hops"):
        graph_app({"region": "us-east", "hops": hops})


def test_the_shipped_graph_config_lists_exactly_the_deployments_its_hops_bind() -> None:
    """Serve refuses a config naming a deployment the app does not bind, and one left out
    runs with the code's defaults: the file and its `hops` must agree."""
    import yaml

    from checkout_risk.cluster import ROOT

    config = yaml.safe_load((ROOT / "configs" / "serve" / "graph.yaml").read_text())
    for app in config["applications"]:
        hops = app["args"].get("hops")
        assert [d["name"] for d in app["deployments"]] == hop_deployments(hops)
        bound = _bound(graph_app(app["args"]))
        assert [b for b in bound if b] == hop_deployments(hops)[1:]


class _Answering(_Remote):
    """A hop that answers every call with `answer`, without a deployment behind it."""

    def __init__(self, answer) -> None:
        super().__init__(handle=None, timeout_s=1.0)
        self.answer, self.calls = answer, []

    async def _request(self, method: str, args: tuple, kwargs: dict):
        self.calls.append(method)
        return self.answer


def test_a_warm_up_that_raises_still_ends_with_what_it_measured() -> None:
    """The health route answers 503 until warming up ends; one that raised must end too,
    or the replica would be kept from traffic for good. Here the feature hop answers
    something that is not a feature batch, so building the warm-up row raises."""
    ingress = object.__new__(GraphIngress.func_or_class)
    ingress.warm_up_ms, ingress._warming = None, None
    features = _Answering(object())
    later = _Answering(None)
    ingress.pipeline = SimpleNamespace(
        region=SimpleNamespace(name="us-east"),
        features=features,
        policy=later,
        scorer=later,
        combiner=later,
    )
    warm = asyncio.run(ingress.warmed())
    assert warm is not None and set(warm) == {"features"}, warm
    assert features.calls == ["lookup"] and later.calls == []


class _Watching(_Answering):
    """A hop that records the Serve request its call would be a child of."""

    async def _request(self, method: str, args: tuple, kwargs: dict):
        from ray.serve.context import _serve_request_context

        current = _serve_request_context.get()
        self.parents.append(current._internal_request_id if current else None)
        await asyncio.sleep(0.05)  # the first call of a handle looks up its replicas
        return await super()._request(method, args, kwargs)


def test_the_warm_up_outlives_the_health_check_that_started_it() -> None:
    """A health check on a busy machine gives up after its own timeout, and Serve cancels
    a request whose client left, with its children. The warm-up it started runs on, and
    its hops are nobody's children: each hop is warmed and the model version is known."""
    from ray.serve.context import _RequestContext, _serve_request_context

    ingress = object.__new__(GraphIngress.func_or_class)
    ingress.warm_up_ms, ingress._warming = None, None
    features = _Watching(FeatureBatch(None, None))
    scorer = _Watching((np.array([0.1]), "v7/main"))
    for hop in (features, scorer):
        hop.parents = []
    ingress.pipeline = SimpleNamespace(
        region=SimpleNamespace(name="us-east"),
        features=features,
        policy=PolicyEngine(CHAMPION_POLICY),
        scorer=scorer,
        combiner=DecisionCombiner(DEFAULT_COSTS, 500.0),
    )

    async def health_check() -> dict | None:
        _serve_request_context.set(
            _RequestContext(_internal_request_id="check-1", cancel_on_parent_request_cancel=True)
        )
        return await ingress.warmed()

    async def main() -> dict | None:
        check = asyncio.ensure_future(health_check())
        await asyncio.sleep(0.01)
        check.cancel()  # the checker left
        await asyncio.gather(check, return_exceptions=True)
        await asyncio.sleep(0.2)
        return await ingress.warmed()

    warm = asyncio.run(main())
    assert warm is not None and set(warm) == {"features", "score"}, warm
    assert features.parents == [None] and scorer.parents == [None]
    assert ingress.pipeline.scorer.champion == "v7"

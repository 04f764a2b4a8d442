"""Monitoring thresholds: ``configs/monitoring/*.yaml``, validated on load.

Every threshold lives in those files; code never hides one. A typo or an impossible
value is one readable error naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs" / "monitoring"

Share = pydantic.confloat(ge=0.0, le=1.0)
DistanceMethod = Literal["wasserstein", "jensenshannon", "psi", "hellinger"]


class ConfigError(ValueError):
    """A monitoring config is unreadable or invalid; the message says where."""


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class PredictionDrift(_Strict):
    score_threshold: pydantic.PositiveFloat
    action_threshold: pydantic.PositiveFloat


class DriftAlerts(_Strict):
    drifted_share: Share
    critical_features: list[str] = []
    prediction: bool
    min_rows: pydantic.PositiveInt


class Timeline(_Strict):
    days: pydantic.conint(ge=0, le=90)
    sample_rows: pydantic.PositiveInt
    min_rows: pydantic.PositiveInt


class DriftConfig(_Strict):
    """configs/monitoring/drift.yaml"""

    sample_rows: pydantic.PositiveInt
    seed: int
    num_method: DistanceMethod
    num_threshold: pydantic.PositiveFloat
    cat_method: DistanceMethod
    cat_threshold: pydantic.PositiveFloat
    features: list[str] = pydantic.Field(min_length=1)
    prediction: PredictionDrift
    alerts: DriftAlerts
    segments: dict[str, str]
    timeline: Timeline

    @pydantic.field_validator("features")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from feature_views.definitions import FEATURE_NAMES

        unknown = sorted(set(value) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}")
        return value

    @pydantic.model_validator(mode="after")
    def _critical_monitored(self) -> DriftConfig:
        missing = sorted(set(self.alerts.critical_features) - set(self.features))
        if missing:
            raise ValueError(f"alerts.critical_features {missing} are not in features")
        return self


class GuardrailConfig(_Strict):
    """configs/monitoring/guardrails.yaml"""

    action_rate_change: dict[Literal["approve", "step_up", "block"], Share]
    min_rows: pydantic.PositiveInt
    rung_share_max: dict[int, Share]
    stale_feature_rate_max: Share
    latency_p99_ms_max: dict[str, pydantic.PositiveFloat]
    stage_timings_field: str
    shadow_disagreement_max: Share


class QualityConfig(_Strict):
    """configs/monitoring/quality.yaml"""

    label_coverage: pydantic.confloat(gt=0.0, lt=1.0)
    window_days: pydantic.PositiveInt
    min_pr_auc: Share
    min_fraud: pydantic.PositiveInt
    max_pr_auc_drop: Share


def _load(path: Path, model: type[pydantic.BaseModel]) -> Any:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from exc


def load_drift(path: str | Path | None = None) -> DriftConfig:
    return _load(Path(path or CONFIG_DIR / "drift.yaml"), DriftConfig)


def load_guardrails(path: str | Path | None = None) -> GuardrailConfig:
    return _load(Path(path or CONFIG_DIR / "guardrails.yaml"), GuardrailConfig)


def load_quality(path: str | Path | None = None) -> QualityConfig:
    return _load(Path(path or CONFIG_DIR / "quality.yaml"), QualityConfig)

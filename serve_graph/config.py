"""Region serving configuration and API clients, validated on load."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pydantic
import yaml

ROOT = Path(__file__).resolve().parent.parent
REGIONS_DIR = ROOT / "configs" / "regions"
CLIENTS = ROOT / "configs" / "clients.yaml"


class RegionConfig(pydantic.BaseModel):
    """configs/regions/<name>.yaml (see us-east.yaml for the meaning of each knob)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    namespace: str
    redis_db: pydantic.NonNegativeInt = 0
    route_prefix: str = "/"
    deadline_ms: pydantic.PositiveFloat = 120
    network_margin_ms: pydantic.NonNegativeFloat = 20
    feature_timeout_ms: pydantic.PositiveFloat = 25
    scoring_budget_ms: pydantic.PositiveFloat = 40
    store_retry_after_s: pydantic.NonNegativeFloat = 1.0
    rules_only_step_up_usd: pydantic.NonNegativeFloat = 100
    explain_top: pydantic.PositiveInt = 5
    max_batch: pydantic.PositiveInt = 32
    batch_wait_ms: pydantic.NonNegativeFloat = 2
    admit_wait_ms: pydantic.PositiveFloat | None = 20
    admit_interval_ms: pydantic.NonNegativeFloat = 50
    jurisdiction: str = "US"
    residency_required: bool = False
    replicate_to: list[str] | None = None
    outbox_maxlen: pydantic.PositiveInt = 1_000_000
    max_event_future_s: pydantic.NonNegativeFloat | None = 300
    max_event_age_s: pydantic.PositiveFloat | None = None

    @property
    def budget_ms(self) -> float:
        """Time we may spend inside the service: the deadline less the network margin."""
        return self.deadline_ms - self.network_margin_ms


def load_region(name_or_path: str | Path) -> RegionConfig:
    path = Path(name_or_path)
    if not path.exists():
        path = REGIONS_DIR / f"{name_or_path}.yaml"
    try:
        return RegionConfig.model_validate(yaml.safe_load(path.read_text()))
    except OSError as exc:
        raise ValueError(f"cannot read region config {path}: {exc.strerror}") from exc
    except (yaml.YAMLError, pydantic.ValidationError) as exc:
        raise ValueError(f"invalid region config {path}: {exc}") from exc


def regions() -> list[RegionConfig]:
    return [load_region(p) for p in sorted(REGIONS_DIR.glob("*.yaml"))]


def replication_targets(
    region: RegionConfig, all_regions: list[RegionConfig] | None = None
) -> list[str]:
    """The regions allowed to receive `region`'s online feature updates.

    Data residency is decided here, once, for the replicator and the manifests: a region
    with ``residency_required`` sends only to regions of its own jurisdiction (EU data
    stays in the EU); ``replicate_to`` narrows the list further, and naming a region that
    residency forbids, or that does not exist, is a configuration error.
    """
    others = {r.name: r for r in (all_regions or regions()) if r.name != region.name}

    def permitted(other: RegionConfig) -> bool:
        return not region.residency_required or other.jurisdiction == region.jurisdiction

    if region.replicate_to is None:
        return sorted(name for name, other in others.items() if permitted(other))
    unknown = sorted(set(region.replicate_to) - set(others))
    if unknown:
        raise ValueError(f"region {region.name}: replicate_to names unknown regions {unknown}")
    forbidden = sorted(n for n in region.replicate_to if not permitted(others[n]))
    if forbidden:
        raise ValueError(
            f"region {region.name}: data must stay in {region.jurisdiction} "
            f"(residency_required), but replicate_to includes {forbidden}"
        )
    return sorted(set(region.replicate_to))


PUBLISH_ENV = "CHECKOUT_RISK_PUBLISH_UPDATES"


def publish_outbox(region: RegionConfig) -> str | None:
    """The replication outbox the region's serving path writes to, or None.

    Off unless ``CHECKOUT_RISK_PUBLISH_UPDATES=1`` (the Kubernetes manifests set it, where
    a replicator drains the stream; locally nothing would), and off for a region whose
    residency rules leave no region to send to, so its updates are never even queued.
    """
    if os.environ.get(PUBLISH_ENV) != "1" or not replication_targets(region):
        return None
    from feature_views.replication import outbox_key

    return outbox_key(region.namespace)


# ---- API keys ---------------------------------------------------------------------------


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def dev_key_path() -> Path:
    from feature_views.store import run_dir

    return run_dir() / "dev-key"


def dev_key() -> str:
    """The local development API key, created on first use (kept in .run/dev-key)."""
    path = dev_key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"dev_{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    return path.read_text().strip()


def client_digests() -> dict[str, str]:
    """Client name -> SHA-256 digest of its key: configs/clients.yaml plus the dev key."""
    raw = yaml.safe_load(CLIENTS.read_text()) if CLIENTS.exists() else {}
    clients = dict((raw or {}).get("clients") or {})
    clients["local-dev"] = digest(dev_key())
    return clients


class ApiKeys:
    """Constant-time API key checks against stored digests."""

    def __init__(self, digests: dict[str, str]) -> None:
        self.digests = digests

    def client_for(self, presented: str | None) -> str | None:
        if not presented:
            return None
        seen = digest(presented)
        match = None
        for name, stored in self.digests.items():  # compare with every digest: no early exit
            if hmac.compare_digest(seen, stored):
                match = name
        return match

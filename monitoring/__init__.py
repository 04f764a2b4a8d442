"""Drift and quality reports, business guardrails, stale-feature and fallback-rate checks."""

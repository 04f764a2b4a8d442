"""Benchmarks with recorded results (bench/results/*.json)."""

"""Benchmarks beside a PyTorch reference; figures in RESULTS.md."""

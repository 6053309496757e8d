"""Benchmarks: `python -m benchmarks [NAME ...]` prints the figures of each part."""

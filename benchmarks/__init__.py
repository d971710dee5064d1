"""Benchmark scripts: each prints figures, none asserts (docs/performance.md).
``python -m benchmarks.run_all`` measures every figure next to its baseline and writes
reports/benchmarks.json."""

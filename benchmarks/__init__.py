"""Benchmarks (scripts, not tests): each prints ratios measured side by side in one run.

Run from the repository root, e.g. ``python -m benchmarks.loop_efficiency``; see BENCHMARKS.md.
"""

"""Scaling sweeps of BERT fine-tuning: search spaces, plans, sweep launch and analysis.

Import-light on purpose: only ``orchestrator.sweep`` imports Ray, and only when a sweep runs.
"""

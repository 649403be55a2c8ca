"""The trial contract: the one package both sides import, and nothing else.

``config`` (what a trial is), ``rows`` (the ``EpochRow`` it reports, and the table columns
derived from it), ``tracking`` (its W&B identity) and ``worker`` (what each Ray Train worker
receives). The orchestrator builds these from search-space files; the trainables read them and
report rows. Only stdlib and pydantic here: no ray, no torch, neither side.
"""

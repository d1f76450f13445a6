"""Triage classifiers: rules, the embedding kNN router and the LLM judge (see
:mod:`flowopt.routing.classifiers.base` for the protocol)."""

__all__: list[str] = []

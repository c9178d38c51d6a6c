"""The gated search: budgets, the MAC model, gates, the L1-sparse optimisation, selection to
the budget, checkpoints, and :func:`kdsearch.search.run.search_student` tying them together."""

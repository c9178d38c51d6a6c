"""The gated search: budgets, the MAC model, gates, the selectors (Fisher, L1), selection to
the budget and checkpoints. :func:`kdsearch.student.run.search_student` runs it and extracts
the student."""

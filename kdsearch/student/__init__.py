"""The found student: extraction of the kept subgraph, ``student.json`` specs, the search run
that produces them (:mod:`kdsearch.student.run`) and model resolution that knows specs."""

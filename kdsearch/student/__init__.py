"""The found student: extraction of the kept subgraph and ``student.json`` specs."""

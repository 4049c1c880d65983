"""Writing policies: test files of cases (``toolgate test``), the trace of one decision
(``toolgate explain``), a starter policy from a server's tools (``toolgate suggest``), and
converting another tool's policy (``toolgate import``)."""

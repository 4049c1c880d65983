"""Policy tests (``toolgate test``): files of cases, each a call or steps of calls with the
decisions expected, run against the engine on a clock of their own."""

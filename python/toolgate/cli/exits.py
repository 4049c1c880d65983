"""The exit statuses of every ``toolgate`` command, one meaning each (docs/sidecar.md lists
them): a script can tell a policy that failed its check from a file it could not read, and
both from a sidecar that is not there."""

#: Done; for a command that checks something, what it checked holds.
OK = 0
#: The command ran and what it checked does not hold: a policy with errors (``validate``), a
#: failing case (``test``), pins that moved (``pin --diff``), a broken log (``log verify``), a
#: sidecar not serving (``health``), a conversion not exact (``import --strict``).
FAILED = 1
#: What it was given cannot be used: an option's value, a policy with errors where one is
#: needed to run, a file that cannot be read, a directory that cannot be made or written, a
#: port in use.
UNUSABLE = 2
#: A server it has to ask did not answer: nothing listens there (after ``--wait``), or the
#: call failed on the way.
UNREACHABLE = 3
#: Ctrl-C (128 + SIGINT, as a shell reports a job it interrupted).
INTERRUPTED = 130
#: Whoever read its output stopped reading (128 + SIGPIPE).
CLOSED_OUTPUT = 141

#: gRPC statuses that say what was sent cannot be used (a token refused, an id unknown, a
#: request out of range); any other failed call did not get through (UNREACHABLE).
_REFUSED_INPUT = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
    }
)


def for_rpc(status: str) -> int:
    """The exit status for a gRPC call that failed with ``status`` (its name)."""
    return UNUSABLE if status in _REFUSED_INPUT else UNREACHABLE

"""How a grant is shown to approvers and in the decision log: a verified identity as it is, a
credential only as a hash keyed by the deployment's key."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from toolgate.files import read_regular


def load_key(path: Path) -> bytes:
    """The deployment's key for hashing credentials, made (random, readable by its owner
    only) the first time: every process of a deployment, and every restart, hash alike."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key(path)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return read_key(path)


def read_key(path: Path) -> bytes:
    """The key in ``path``: a regular file of at least 32 bytes (ValueError otherwise; OSError
    if it cannot be read)."""
    key = read_regular(path, limit=1 << 20)
    if len(key) < 32:
        raise ValueError(f"{path}: a key file holds at least 32 bytes")
    return key


@dataclass(frozen=True)
class GrantLabels:
    """How a grant is shown: a verified identity (a JWT claim) as it is; a credential only
    as a keyed hash, never in clear."""

    key: bytes

    def label(self, grant: str | None, verified: bool) -> str | None:
        if grant is None or verified:
            return grant
        digest = hmac.new(self.key, grant.encode(), hashlib.sha256).hexdigest()
        return f"hmac-sha256:{digest[:32]}"

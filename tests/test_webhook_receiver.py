"""examples/webhook_receiver.py, the receiver docs/approvals.md's walk-through runs: it
accepts what the sidecar signs (checked with the sidecar's own signing code) and refuses a
wrong signature or an old timestamp."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sidecar import free_port, wait_for
from toolgate.sidecar.approvals.webhook import signature

RECEIVER = Path(__file__).resolve().parent.parent / "examples" / "webhook_receiver.py"


def post(port: int, body: bytes, timestamp: str, signed: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/toolgate",
        data=body,
        headers={"X-Toolgate-Timestamp": timestamp, "X-Toolgate-Signature": signed},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def test_the_receiver_checks_what_the_sidecar_signs(tmp_path: Path):
    secret = b"s" * 32
    (tmp_path / "webhook.secret").write_bytes(secret + b"\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(RECEIVER), "--port", str(port), "--secret-file", "webhook.secret"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = json.dumps(
            {"type": "approval.opened", "approval": {"id": "apr_1", "tool": "t", "arguments": "{}"}}
        ).encode()
        now = str(int(time.time()))

        def accepted() -> bool | None:
            try:
                return post(port, body, now, signature(secret, now, body)) == 200 or None
            except OSError:
                return None  # not listening yet

        wait_for(accepted)
        assert post(port, body, now, signature(b"x" * 32, now, body)) == 401
        old = str(int(time.time()) - 3600)
        assert post(port, body, old, signature(secret, old, body)) == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert out.splitlines() == [
        "approval.opened apr_1 t {} (signature ok)",
        "refused: bad signature",
        "refused: timestamp too old (a replay?)",
    ]

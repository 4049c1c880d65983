"""A receiver for toolgate's approval webhook, to try approvals with: it checks each POST's
signature and prints one line per approval opened.

    python examples/webhook_receiver.py --port 8080 --secret-file webhook.secret

``toolgate serve --approval-webhook http://127.0.0.1:8080/toolgate --approval-webhook-secret
webhook.secret`` then POSTs each new pending approval here. A request is accepted (200) when
``X-Toolgate-Signature`` is ``v1=`` and the HMAC-SHA256 of ``<X-Toolgate-Timestamp>.<body>``
under the secret, compared in constant time, and its timestamp is at most 5 minutes old (a
replay is older); otherwise it is refused (401) and says why. Listens on 127.0.0.1 only;
standard library only. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: How old a timestamp may be, in seconds, before the request is taken for a replay.
TOLERANCE = 300


def check(secret: bytes, timestamp: str, signature: str, body: bytes, now: float) -> str | None:
    """Why the request is refused, or None if it is toolgate's and fresh."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    expected = "v1=" + mac.hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "bad signature"
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE:
        return "timestamp too old (a replay?)"
    return None


def handler(secret: bytes) -> type[BaseHTTPRequestHandler]:
    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            refused = check(
                secret,
                self.headers.get("X-Toolgate-Timestamp", ""),
                self.headers.get("X-Toolgate-Signature", ""),
                body,
                time.time(),
            )
            if refused:
                print(f"refused: {refused}", flush=True)
                self.send_response(401)
            else:
                event = json.loads(body)
                a = event.get("approval", {})
                print(
                    f"{event.get('type')} {a.get('id')} {a.get('tool')} {a.get('arguments')}"
                    " (signature ok)",
                    flush=True,
                )
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # one line per approval
            pass

    return Receive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="on 127.0.0.1")
    parser.add_argument(
        "--secret-file", required=True, help="the file given to --approval-webhook-secret"
    )
    args = parser.parse_args()
    secret = Path(args.secret_file).read_bytes().strip()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(secret))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("webhook_receiver.py: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

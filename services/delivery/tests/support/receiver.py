"""A webhook receiver for the delivery tests.

Verifies every request with the independent `standardwebhooks` package (PyPI), records what
arrived, and answers as scripted. Usage: receiver.py PORT [CONTROL-JSON] (PORT 0 = any);
prints "listening PORT".
Control: POST /_control {"secrets": [...], "script": [{"status": 500, "sleep": 1.5,
"retry_after": 0}, ...], "default": {...}}; GET /_log answers the recorded deliveries,
GET /_count how many there are.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

STATE = {"secrets": [], "script": [], "default": {"status": 200}, "log": []}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, code, obj=None, headers=()):
        body = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_log":
            with LOCK:
                self._answer(200, STATE["log"])
        elif self.path == "/_count":
            with LOCK:
                self._answer(200, {"count": len(STATE["log"])})
        else:
            self._answer(404, {})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/_control":
            cfg = json.loads(raw)
            with LOCK:
                for key in ("secrets", "script", "default"):
                    if key in cfg:
                        STATE[key] = cfg[key]
            return self._answer(200, {"ok": True})
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified = []
        errors = []
        for i, secret in enumerate(STATE["secrets"]):
            try:
                Webhook(secret).verify(raw, headers)
                verified.append(i)
            except Exception as e:  # noqa: BLE001 - record why
                errors.append(str(e))
        with LOCK:
            action = STATE["script"].pop(0) if STATE["script"] else STATE["default"]
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            STATE["log"].append(
                {
                    "webhook_id": headers.get("webhook-id"),
                    "webhook_timestamp": headers.get("webhook-timestamp"),
                    "signatures": len(headers.get("webhook-signature", "").split()),
                    "verified_with": verified,
                    "errors": errors,
                    "content_type": headers.get("content-type"),
                    "body": body,
                    "answered": action.get("status", 200) if verified else 401,
                    "path": self.path,
                    "received_at": time.time(),
                }
            )
        try:
            if action.get("sleep"):
                time.sleep(action["sleep"])
            if not verified:
                return self._answer(401, {"error": "no valid signature", "details": errors})
            extra = []
            if "retry_after" in action:
                extra.append(("Retry-After", str(action["retry_after"])))
            self._answer(action.get("status", 200), None, extra)
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if len(sys.argv) > 2:
        STATE.update(json.loads(sys.argv[2]))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

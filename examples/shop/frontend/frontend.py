"""frontend: the shop's page, and /api/... passed on to the api service.

GET /         an HTML page that shows the api's answer, refreshed every second
GET /healthz  200 ok (the readiness probe)
GET /api/X    GET http://api/X (a new connection each time: the balancer spreads them over
              the api replicas), answered as JSON with "frontend": this replica added.
              A failed call is retried for a few seconds (GET is idempotent)
"""

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
API = "http://api"  # the api service, by name (port 80)
RETRY_FOR = 10.0  # seconds
HOSTNAME = socket.gethostname()

PAGE = b"""<!doctype html>
<title>rcompose shop</title>
<h1>rcompose shop</h1>
<pre id="out">...</pre>
<script>
async function tick() {
  try {
    const r = await fetch("/api/orders");
    document.getElementById("out").textContent = JSON.stringify(await r.json(), null, 2);
  } catch (e) {
    document.getElementById("out").textContent = String(e);
  }
}
tick(); setInterval(tick, 1000);
</script>
"""


def api_get(path):
    deadline = time.monotonic() + RETRY_FOR
    while True:
        try:
            with urllib.request.urlopen(API + path, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            if e.code < 500 or time.monotonic() > deadline:
                return e.code, e.read()
        except OSError as e:
            if time.monotonic() > deadline:
                return 502, json.dumps({"error": f"api unreachable: {e}"}).encode()
        time.sleep(0.1)


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body, ctype):
        head = (
            f"HTTP/1.0 {code} {self.responses[code][0]}\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.wfile.write(head.encode() + body)  # one write: never half an answer

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, b"ok\n", "text/plain")
        if self.path == "/":
            return self.reply(200, PAGE, "text/html")
        if self.path.startswith("/api/"):
            code, body = api_get(self.path[len("/api") :])
            try:
                doc = {"frontend": HOSTNAME, **json.loads(body)}
                body = json.dumps(doc).encode() + b"\n"
            except ValueError:
                pass
            return self.reply(code, body, "application/json")
        self.reply(404, b"not found\n", "text/plain")

    def log_message(self, fmt, *args):
        pass


print(f"{HOSTNAME}: frontend on :{PORT}, api at {API}", flush=True)
ThreadingHTTPServer(("", PORT), Handler).serve_forever()

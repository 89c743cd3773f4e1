"""api: answers each request from the db service, with who answered and how long the db took.

GET /healthz   200 ok (the readiness probe: the api itself, not the db)
GET /orders    {"replica": "api-2", "node": "worker-1", "orders": 42, "db_ms": 1.3}: the number of
               orders in the db

`db_ms` is the round trip of the one db request that answered (on a kept-alive connection:
one request and its answer). A db that is away (moving to another node) is retried for a
few seconds before the api gives up with a 503.
"""

import http.client
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
DB = ("db", 7000)  # the db service, by name: its virtual address on the project network
RETRY_FOR = 8.0  # seconds
HOSTNAME = socket.gethostname()


def node():
    """The node this replica runs on: rcompose puts it in the cgroup path
    (.../rcompose/<project>/<node>/<replica>/...), which /proc/self/cgroup shows."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                parts = line.strip().split(":", 2)[2].split("/")
                if "rcompose" in parts:
                    i = parts.index("rcompose")
                    if len(parts) > i + 3 and parts[i + 3] == HOSTNAME:
                        return parts[i + 2]
    except (OSError, IndexError):
        pass
    return None


NODE = node()
POOL = []  # idle kept-alive connections to db
POOL_LOCK = threading.Lock()


def db_get(path):
    """GET `path` of the db: (decoded JSON, milliseconds of the request that answered)."""
    deadline = time.monotonic() + RETRY_FOR
    while True:
        with POOL_LOCK:
            conn = POOL.pop() if POOL else None
        conn = conn or http.client.HTTPConnection(*DB, timeout=5)
        try:
            t0 = time.monotonic()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            ms = (time.monotonic() - t0) * 1000
            if resp.status != 200:
                raise OSError(f"db answered {resp.status}")
            with POOL_LOCK:
                POOL.append(conn)
            return json.loads(body), round(ms, 1)
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if time.monotonic() > deadline:
                raise OSError(f"db unreachable: {e}") from e
            time.sleep(0.1)


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, doc):
        body = json.dumps(doc).encode() + b"\n"
        head = (
            f"HTTP/1.0 {code} {self.responses[code][0]}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.wfile.write(head.encode() + body)  # one write: never half an answer

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, {"status": "ok"})
        if self.path in ("/", "/orders"):
            try:
                orders, ms = db_get("/orders")
            except OSError as e:
                return self.reply(503, {"replica": HOSTNAME, "error": str(e)})
            return self.reply(
                200,
                {
                    "replica": HOSTNAME,
                    "node": NODE,
                    "orders": orders["count"],
                    "db_ms": ms,
                },
            )
        self.reply(404, {"error": "not found"})

    def log_message(self, fmt, *args):
        pass


print(f"{HOSTNAME}: api on :{PORT} (node {NODE}), db at {DB[0]}:{DB[1]}", flush=True)
ThreadingHTTPServer(("", PORT), Handler).serve_forever()

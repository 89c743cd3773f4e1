"""db: a tiny database over HTTP, an SQLite file in /tmp (so a db that moves starts empty).

GET  /healthz   200 ok (the readiness probe)
GET  /orders    {"count": N, "last": {...}} the number of orders and the latest one
POST /orders    {"item": "teapot", "qty": 2} -> 201 {"id": 17}
"""

import json
import socket
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 7000
PATH = "/tmp/shop.sqlite"
LOCK = threading.Lock()  # one writer at a time; SQLite would serialize anyway


def connect():
    return sqlite3.connect(PATH, timeout=5)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the api reuses its connections

    def reply(self, code, doc):
        body = json.dumps(doc).encode() + b"\n"
        head = (
            f"HTTP/1.1 {code} {self.responses[code][0]}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.wfile.write(head.encode() + body)  # one write: never half an answer

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, {"status": "ok"})
        if self.path == "/orders":
            with connect() as db:
                count = db.execute("SELECT count(*) FROM orders").fetchone()[0]
                row = db.execute(
                    "SELECT id, item, qty FROM orders ORDER BY id DESC LIMIT 1"
                ).fetchone()
            last = dict(zip(("id", "item", "qty"), row)) if row else None
            return self.reply(200, {"count": count, "last": last})
        self.reply(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/orders":
            return self.reply(404, {"error": "not found"})
        order = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with LOCK, connect() as db:
            cur = db.execute(
                "INSERT INTO orders (item, qty) VALUES (?, ?)",
                (str(order["item"]), int(order["qty"])),
            )
        self.reply(201, {"id": cur.lastrowid})

    def log_message(self, fmt, *args):  # quiet: the worker logs every order
        pass


with connect() as db:
    db.execute(
        "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)"
    )
print(f"{socket.gethostname()}: db listening on :{PORT}, data in {PATH}", flush=True)
ThreadingHTTPServer(("", PORT), Handler).serve_forever()

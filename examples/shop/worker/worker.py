"""worker: places an order in the db about every second, and logs it."""

import json
import random
import socket
import time
import urllib.request

DB = "http://db:7000"  # the db service, by name
ITEMS = ["teapot", "mug", "kettle", "saucer", "spoon"]
HOSTNAME = socket.gethostname()

print(f"{HOSTNAME}: placing an order every second at {DB}", flush=True)
while True:
    order = {"item": random.choice(ITEMS), "qty": random.randint(1, 3)}
    req = urllib.request.Request(
        DB + "/orders",
        data=json.dumps(order).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            id_ = json.loads(r.read())["id"]
        ms = (time.monotonic() - t0) * 1000
        print(f"order {id_}: {order['qty']} x {order['item']} ({ms:.1f} ms)", flush=True)
    except OSError as e:
        print(f"db unreachable, will retry: {e}", flush=True)
    time.sleep(1)

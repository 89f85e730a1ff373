"""Issue #12's defect list tried again against a running orchestrator, as a hostile client or
worker would: a manual check, not part of the test suite (each defect has its regression test).

    cargo run --example quickstart &          # 127.0.0.1:8080, in memory
    $AVTO_PY_VENV/bin/python tests/python/hostile_check.py [BASE] [PID]

BASE defaults to http://127.0.0.1:8080 with the quickstart's tokens (AVTO_CLIENT_TOKEN,
AVTO_WORKER_TOKEN override them); PID (the orchestrator's) adds a memory reading around the
flood of unauthenticated requests. Only ever sends traffic to BASE, which must be loopback.
Prints one line per check and `N passed, N failed` at the end; exits 1 if any check failed.
"""

import http.client
import json
import os
import random
import socket
import string
import sys
import time
import uuid
from urllib.parse import urlparse

from rxon.security import sign_payload

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
PID = int(sys.argv[2]) if len(sys.argv) > 2 else None
CLIENT = os.environ.get("AVTO_CLIENT_TOKEN", "quickstart-token")
WORKER_TOKEN = os.environ.get("AVTO_WORKER_TOKEN", "quickstart-worker-token")
URL = urlparse(BASE)
assert URL.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f"  ({detail})" if detail else ""))


def request(method, path, body=None, headers=None, raw=None):
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=15)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    text = resp.read().decode("utf-8", "replace")
    conn.close()
    try:
        return resp.status, json.loads(text) if text else None
    except ValueError:
        return resp.status, text


def client(method, path, body=None, token=CLIENT):
    return request(method, path, body, {"X-Client-Token": token})


def signed(body, worker_id):
    body = dict(body)
    body.setdefault("timestamp", int(time.time()))
    body["security"] = {"signature": sign_payload(body, WORKER_TOKEN), "signer_id": worker_id}
    return body


def worker(method, path, body, worker_id):
    return request(method, path, signed(body, worker_id), {"X-Worker-Token": WORKER_TOKEN, "X-Worker-ID": worker_id})


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def wait_terminal(job_id, timeout=75):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, job = client("GET", f"/api/v1/jobs/{job_id}")
        if status == 200 and job["status"] in ("finished", "failed", "cancelled", "quarantined"):
            return job
        time.sleep(0.2)
    return None


# 1. Overflowing durations and timestamps.
for field in ("dispatch_timeout", "result_timeout"):
    status, body = client("POST", "/api/v1/jobs/hello", {"initial_data": {}, field: 1e300})
    check(f"1. {field}=1e300 is a 400 naming the field", status == 400 and field in json.dumps(body), f"{status} {body}")
status, body = worker(
    "POST", "/_worker/workers/register",
    {"worker_id": "hostile-1", "timestamp": -9223372036854775808, "supported_skills": []}, "hostile-1",
)
check("1. a worker timestamp of i64::MIN is refused (403), not a dropped connection", status == 403, f"{status} {body}")
status, _ = client("GET", "/api/v1/workers")
check("1. the worker side still answers after them", status == 200, str(status))

# 8. Nesting depth.
deep = {}
for _ in range(127):
    deep = {"a": deep}
status, body = client("POST", "/api/v1/jobs/hello", {"initial_data": deep})
check("8. a 127-level initial_data is a 400", status == 400, f"{status} {str(body)[:120]}")

# 4. SSRF through webhook_url.
for target in ("http://127.0.0.1:9/x", "http://[::1]/", "http://0.0.0.0/", "http://2130706433/",
               "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://192.168.1.1/",
               "http://0x7f.1/", "http://[::ffff:127.0.0.1]/"):
    status, body = client("POST", "/api/v1/jobs/hello", {"initial_data": {}, "webhook_url": target})
    check(f"4. webhook_url {target} is refused", status == 400, f"{status} {body}")

# 9. Operator routes.
status, _ = client("POST", "/api/v1/admin/reload-workers")
check("9. a client token cannot reload workers", status in (401, 403), str(status))
status, _ = request("GET", "/metrics")
check("9. /metrics needs the operator credential", status in (401, 403), str(status))
status, workers = client("GET", "/api/v1/workers")
text = json.dumps(workers)
check("9. clients see no worker registration details", status == 200 and "hostname" not in text and "ip_address" not in text,
      text[:160])

# 3. Workers write only into jobs they hold.
status, created = client("POST", "/api/v1/jobs/hello", {"initial_data": {"name": "hostile"}})
job_id = created["job_id"]
job = wait_terminal(job_id)
check("3. the demo job finishes", job is not None and job["status"] == "finished", str(job and job["status"]))
status, _ = worker("POST", "/_worker/workers/register", {"worker_id": "hostile-2", "supported_skills": [{"name": "x"}]}, "hostile-2")
check("3. a second worker registers", status == 200, str(status))
event = {"event_id": str(uuid.uuid4()), "event_type": "progress", "target_job_id": job_id, "worker_id": "hostile-2",
         "origin_worker_id": "hostile-2", "payload": {"progress": 0.5, "message": "injected"}}
status, body = worker("POST", "/_worker/events", event, "hostile-2")
check("3. progress into a finished job of another worker is refused", status in (403, 409), f"{status} {body}")

# 11. Authentication before the body.
status, _ = request("POST", "/_worker/tasks/result", raw=b"{not json")
check("11. a malformed result without a token is a 403", status == 403, str(status))

# 2. Rate limits after authentication, keyed by route template, bounded memory.
before = rss_kib(PID) if PID else None
statuses = {}
for _ in range(2000):
    path = "/" + "".join(random.choices(string.ascii_letters, k=16000))
    try:
        status, _ = request("GET", path)
    except (ConnectionError, http.client.HTTPException) as e:
        status = type(e).__name__
    statuses[status] = statuses.get(status, 0) + 1
check("2. 2,000 token-less requests with 16 kB paths get 4xx answers", all(isinstance(s, int) and 400 <= s < 500 for s in statuses),
      str(statuses))
if PID:
    after = rss_kib(PID)
    check("2. ... and the orchestrator's memory stays put (< 20 MiB more)", after - before < 20 * 1024, f"{before} -> {after} KiB")
limited = 0
for _ in range(130):
    status, _ = client("GET", f"/api/v1/jobs/{uuid.uuid4()}")
    limited += status == 429
check("2. 130 GETs of random job ids hit the rate limit", limited > 0, f"{limited} answers were 429")

# 10. Slow and idle connections.
slow = socket.create_connection((URL.hostname, URL.port))
slow.sendall(b"GET /_public/status HTTP/1.1\r\nHost: x\r\n")
slow.settimeout(20)
start = time.time()
try:
    data = slow.recv(1024)
except (socket.timeout, ConnectionResetError):
    data = None
check("10. a request head that never ends is cut off", data is not None and time.time() - start < 19,
      f"after {time.time() - start:.1f} s: {data[:40] if data else data}")
slow.close()
idle = [socket.create_connection((URL.hostname, URL.port)) for _ in range(200)]
status, _ = request("GET", "/_public/status")
check("10. /_public/status answers with 200 idle sockets open", status == 200, str(status))
for s in idle:
    s.close()

failed = results.count(False)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)

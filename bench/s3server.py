#!/usr/bin/env python3
"""moto's S3 server on two loopback ports, counting requests server-side.

    python3 bench/s3server.py --port-replicator P1 --port-restore P2

One moto backend (one process, one in-memory store) is served on two ports:

* the *replicator* port, which the replicator under test (walvault or Litestream)
  talks to: every request on it is counted, by operation;
* the *restore* port, which the harness's restores (staleness probes, drain checks,
  verification) talk to: counted separately, so probes never inflate a tool's figures.

Operations are the HTTP method, except that a GET on a bucket (no key) is `LIST`,
a POST with `?delete` is `DELETE_MULTI`, and multipart calls are `MPU_*`.

Control endpoints (any port, never counted, no S3 semantics):

    GET  /__bench/counts               {"counts": {"replicator": {"PUT": n, ...}, "restore": {...}},
                                        "last_list": {"restore": arrival time of the newest LIST}}
    POST /__bench/reset                zero all counters
    PUT  /__bench/bucket/<name>        create a bucket (in-process)
    DELETE /__bench/bucket/<name>      delete a bucket and every object in it (frees memory)
    GET  /__bench/stored/<name>        {"objects": n, "bytes": n, "by_level": {level: bytes},
                                        "objects_by_level": {level: n}, "dbs": n}

Only the standard library and moto are used.
"""

import argparse
import json
import signal
import sys
import threading
import time
from collections import Counter
from urllib.parse import parse_qs

from werkzeug.serving import WSGIRequestHandler, make_server

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

ACCOUNT = "123456789012"  # moto's default account


class QuietHandler(WSGIRequestHandler):
    """No access log: printing every request would cost the server more than it serves."""

    def log_request(self, *args, **kwargs):  # noqa: D401
        pass


def classify(environ):
    method = environ.get("REQUEST_METHOD", "GET").upper()
    path = environ.get("PATH_INFO", "/")
    qs = environ.get("QUERY_STRING", "")
    q = parse_qs(qs, keep_blank_values=True)
    parts = [p for p in path.split("/") if p]
    has_key = len(parts) >= 2
    if method == "GET" and not has_key:
        return "LIST" if parts else "LIST_BUCKETS"
    if method == "POST" and "delete" in q:
        return "DELETE_MULTI"
    if "uploads" in q:
        return "MPU_CREATE"
    if "uploadId" in q:
        return {"PUT": "MPU_PART", "POST": "MPU_COMPLETE", "DELETE": "MPU_ABORT"}.get(
            method, "MPU_" + method
        )
    return method


def s3_backend():
    from moto.s3.models import s3_backends

    return s3_backends[ACCOUNT]["aws"]


class Counting:
    def __init__(self, app, ports):
        self.app = app
        self.ports = ports  # port -> role
        self.lock = threading.Lock()
        self.counts = {role: Counter() for role in set(ports.values())}
        self.bytes_in = Counter()
        self.last_list = {}  # role -> arrival time (epoch s) of the newest LIST request

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path.startswith("/__bench/"):
            return self.control(environ, start_response)
        role = self.ports.get(int(environ.get("SERVER_PORT", 0)), "other")
        op = classify(environ)
        try:
            n = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            n = 0
        t = time.time()
        with self.lock:
            self.counts.setdefault(role, Counter())[op] += 1
            self.bytes_in[role] += n
            if op == "LIST":
                self.last_list[role] = t
        return self.app(environ, start_response)

    def reply(self, start_response, obj, status="200 OK"):
        body = json.dumps(obj).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def control(self, environ, start_response):
        method = environ["REQUEST_METHOD"].upper()
        parts = [p for p in environ["PATH_INFO"].split("/") if p][1:]
        try:
            if parts == ["counts"]:
                with self.lock:
                    return self.reply(
                        start_response,
                        {
                            "counts": {r: dict(c) for r, c in self.counts.items()},
                            "bytes_in": dict(self.bytes_in),
                            "last_list": dict(self.last_list),
                        },
                    )
            if parts == ["reset"] and method == "POST":
                with self.lock:
                    for c in self.counts.values():
                        c.clear()
                    self.bytes_in.clear()
                return self.reply(start_response, {"ok": True})
            if len(parts) == 2 and parts[0] == "bucket":
                be = s3_backend()
                if method == "PUT":
                    be.create_bucket(parts[1], "us-east-1")
                    return self.reply(start_response, {"ok": True})
                if method == "DELETE":
                    bucket = be.get_bucket(parts[1])
                    for key in list(bucket.keys.values()):
                        try:
                            key.dispose()
                        except Exception:
                            pass
                    bucket.keys.clear()
                    be.delete_bucket(parts[1])
                    return self.reply(start_response, {"ok": True})
            if len(parts) == 2 and parts[0] == "stored":
                bucket = s3_backend().get_bucket(parts[1])
                objects = 0
                total = 0
                by_level = Counter()
                n_by_level = Counter()
                per_db = Counter()
                for name, key in list(bucket.keys.items()):
                    size = getattr(key, "size", 0) or 0
                    objects += 1
                    total += size
                    segs = name.split("/")
                    # <prefix...>/<db>/<level %04x>/<min>-<max>.ltx
                    if len(segs) >= 3:
                        by_level[segs[-2]] += size
                        n_by_level[segs[-2]] += 1
                        per_db["/".join(segs[:-2])] += 1
                return self.reply(
                    start_response,
                    {
                        "objects": objects,
                        "bytes": total,
                        "by_level": dict(by_level),
                        "objects_by_level": dict(n_by_level),
                        "dbs": len(per_db),
                    },
                )
        except Exception as e:  # report, never crash the server
            return self.reply(start_response, {"error": repr(e)}, "500 Internal Server Error")
        return self.reply(start_response, {"error": "unknown control path"}, "404 Not Found")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port-replicator", type=int, required=True)
    ap.add_argument("--port-restore", type=int, required=True)
    a = ap.parse_args()

    app = DomainDispatcherApplication(create_backend_app)
    counting = Counting(app, {a.port_replicator: "replicator", a.port_restore: "restore"})
    servers = [
        make_server(a.host, p, counting, threaded=True, request_handler=QuietHandler)
        for p in (a.port_replicator, a.port_restore)
    ]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    print(f"ready {a.port_replicator} {a.port_restore}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for s in servers:
        s.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()

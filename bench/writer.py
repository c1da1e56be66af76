#!/usr/bin/env python3
"""The benchmark's writer: commits one row per transaction to SQLite databases.

    python3 bench/writer.py CONFIG.json

CONFIG: {"dbs": [paths], "rate": commits/s per database (0 = as fast as possible),
         "duration": seconds, "payload": bytes per row, "out": result path}

Every commit is `INSERT INTO t(ts, payload)` in autocommit mode, `ts` being the wall
clock (time.time()) read just before the statement: the commit time the staleness
probes subtract from. Commits are spread round-robin over the databases on one global
schedule (commit k is due at start + k / (rate * n)); a writer that falls behind
catches up without sleeping, so the achieved rate is what is reported, never the target.

Optional (scenario 6's history writer): "update": k updates `k` random existing rows
(ids 1..`update_max_id`) in the same transaction as the INSERT (BEGIN IMMEDIATE ... COMMIT),
so that commits touch pages all over the database; "half_random": payloads are half random
bytes, half a repeated text (compressible, like real rows), instead of all random.

Result: {"start", "end", "commits", "errors", "per_db": {path: {"commits", "last_id",
"last_ts"}}}, written to `out` when the duration is over (or on SIGTERM).
"""

import json
import os
import random
import signal
import sqlite3
import sys
import time


def open_db(path):
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if mode.lower() != "wal":
        raise SystemExit(f"{path} is not in WAL mode ({mode})")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def main():
    cfg = json.load(open(sys.argv[1]))
    dbs = cfg["dbs"]
    rate = float(cfg["rate"])
    duration = float(cfg["duration"])
    payload_len = int(cfg.get("payload", 100))
    n_update = int(cfg.get("update", 0))
    update_max = int(cfg.get("update_max_id", 0))
    half = bool(cfg.get("half_random", False))
    rnd = random.Random(cfg.get("seed", 7))

    def payload():
        if not half:
            return os.urandom(payload_len)
        r = payload_len // 2
        return os.urandom(r) + (b"walvault-bench " * (payload_len // 15 + 1))[: payload_len - r]
    conns = [open_db(p) for p in dbs]
    per_db = {p: {"commits": 0, "last_id": None, "last_ts": None} for p in dbs}
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))

    n = len(dbs)
    total_rate = rate * n
    errors = 0
    error_samples = []
    commits = 0
    print("writing", flush=True)
    start = time.time()
    deadline = start + duration
    k = 0
    stmt = "INSERT INTO t(ts, payload) VALUES (?, ?)"
    while not stop[0]:
        if total_rate > 0:
            due = start + k / total_rate
            now = time.time()
            if due >= deadline:
                break
            if due > now:
                time.sleep(due - now)
        elif time.time() >= deadline:
            break
        i = k % n
        k += 1
        conn = conns[i]
        ts = time.time()
        try:
            if n_update:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for _ in range(n_update):
                        conn.execute(
                            "UPDATE t SET ts = ?, payload = ? WHERE id = ?", (ts, payload(), rnd.randint(1, update_max))
                        )
                    cur = conn.execute(stmt, (ts, payload()))
                    conn.execute("COMMIT")
                except sqlite3.OperationalError:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            else:
                cur = conn.execute(stmt, (ts, payload()))
        except sqlite3.OperationalError as e:
            errors += 1
            if len(error_samples) < 5:
                error_samples.append(f"{dbs[i]}: {e}")
            continue
        d = per_db[dbs[i]]
        d["commits"] += 1
        d["last_id"] = cur.lastrowid
        d["last_ts"] = ts
        commits += 1
    end = time.time()
    last_ts = max((d["last_ts"] for d in per_db.values() if d["last_ts"]), default=None)
    for c in conns:
        c.close()
    out = {
        "start": start,
        "end": end,
        "last_commit_ts": last_ts,
        "commits": commits,
        "errors": errors,
        "error_samples": error_samples,
        "per_db": per_db,
    }
    tmp = cfg["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, cfg["out"])


if __name__ == "__main__":
    main()

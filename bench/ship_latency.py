"""Ship latency when a writer stops, for walvault and Litestream on the same machine.

A diagnostic beside run.py, not one of the contract's figures: each run starts the tool
on a fresh database with a `file://` replica (sync interval 1 s), waits for its first
file, then a stop phase (runs use phases (i + 0.5) / n of the interval, alternating which
tool goes first), writes 100 commits/s for 5 s, and measures the time from the last
commit until the next level-0 file appears in the replica (polled every 2 ms). Without
a store or a restore in the way, it shows what the drain figure's restores blur: how
long the last commits wait for their file.

    python3 bench/ship_latency.py WORKDIR WALVAULT_BIN LITESTREAM_BIN [RUNS [WALVAULT_ARGS...]]

e.g. `... 10 --ship-when-quiet 250ms` for decision 24's early ship.
"""
import os, random, sqlite3, subprocess, sys, time, shutil, statistics

EXTRA = sys.argv[5:]


def run(tool, binary, phase, work):
    d = os.path.join(work, f"{tool}-{phase:.3f}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    db = os.path.join(d, "app.db")
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ts REAL, p BLOB)")
    rep = os.path.join(d, "replica")
    if tool == "walvault":
        cmd = [binary, "watch", db, "-b", "file://" + rep, "--sync-interval", "1s"] + EXTRA
    else:
        cfg = os.path.join(d, "ls.yml")
        open(cfg, "w").write(f"dbs:\n  - path: {db}\n    replicas:\n      - type: file\n        path: {rep}\n        sync-interval: 1s\n")
        cmd = [binary, "replicate", "-config", cfg]
    log = open(os.path.join(d, "log"), "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    # Wait for the first file, then the phase.
    def l0files():
        out = []
        for root, _, files in os.walk(rep):
            if "/0" in root.replace(rep, "") or root.endswith("/0"):
                out += [os.path.join(root, f) for f in files if f.endswith(".ltx")]
        return set(out)
    t0 = time.time()
    while not l0files():
        time.sleep(0.005)
        if time.time() - t0 > 20:
            p.kill(); raise SystemExit(f"{tool}: no first file")
    first = time.time()
    time.sleep(1.0 + phase)
    n = 0
    end = time.time() + 5
    nxt = time.time()
    while time.time() < end:
        c.execute("INSERT INTO t (ts, p) VALUES (?, randomblob(200))", (time.time(),))
        n += 1
        nxt += 0.01
        time.sleep(max(0, nxt - time.time()))
    last = time.time()
    before = l0files()
    seen = None
    while time.time() - last < 3:
        new = l0files() - before
        if new:
            seen = time.time()
            break
        time.sleep(0.002)
    p.terminate(); p.wait()
    c.close()
    return (seen - last) if seen else None, (last - first)

def main():
    work = sys.argv[1]
    bins = {"walvault": sys.argv[2], "litestream": sys.argv[3]}
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    res = {"walvault": [], "litestream": []}
    for i in range(n):
        phase = (i + 0.5) / n
        for tool in ("walvault", "litestream") if i % 2 == 0 else ("litestream", "walvault"):
            lat, since_first = run(tool, bins[tool], phase, work)
            res[tool].append(lat)
            print(f"{tool:10s} phase {phase:.2f} stop at +{since_first:.3f}s after first file: ship {lat}", flush=True)
    for t, v in res.items():
        v = [x for x in v if x is not None]
        print(t, "median", round(statistics.median(v), 3), "mean", round(statistics.mean(v), 3), "n", len(v))

main()

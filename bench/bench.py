"""The benchmark driver behind bench/run: runs each (workload, target) pair BENCH_REPEATS times,
interleaved, checks that the writes really landed, and writes the results and the report.

    python3 bench/bench.py [--quick] [W1 W2 W3 W4 W5] [--targets snapkeep,nginx,...]

Environment: BENCH_REPEATS (3; --quick: 1), BENCH_DURATION (seconds per wrk run; 6, --quick: 2),
BENCH_TARGETS (comma list), BENCH_TMP (parent of the temp dir; /tmp), BENCH_KEEP_TMP=1,
BENCH_BASELINE (an older snapkeep binary: adds the snapkeep-before* targets)."""

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import report
import seed
from targets import BASELINE, BENCH, BINARIES, REPO, S3_TARGETS, TARGETS, Moto, MotoPeer, Server
from targets import count_files, json_server_count, pin_binaries, remove_tree, request

MiB = 1 << 20
SMALL = 4096  # W1, W3, W4 bodies
LARGE = MiB  # W2 bodies
UPLOAD = 200 * MiB  # W5
W4_SCALES = [0, 10_000, 100_000]
# examples/disk_limit runs, no HTTP: name -> (files kept per session, 0 = all; fsync). The
# first is issue 6's disk limit; the others show what retention's deletes and fsync cost.
DISK_PROBES = {
    "disk-limit": (0, True),
    "disk-rotating": (10, True),
    "disk-nofsync": (0, False),
    "disk-nofsync-rotating": (10, False),
}
HTTP = [t for t in TARGETS if t not in S3_TARGETS]  # with snapkeep-before* if BENCH_BASELINE
W1_ONLY = ["http-disk"]
WORKLOADS = {
    "W1": dict(targets=list(DISK_PROBES) + HTTP + ["snapkeep-s3", "moto-put"], connections=16,
               body=SMALL),
    "W2": dict(targets=[t for t in HTTP if t not in W1_ONLY], connections=4, body=LARGE),
    "W3": dict(targets=["snapkeep", "snapkeep-before", "http-floor", "nginx", "dufs", "express",
                        "json-server", "snapkeep-s3", "moto-get"], connections=16),
    "W4": dict(targets=["snapkeep", "snapkeep-nofsync"], connections=16, body=SMALL),
    "W5": dict(targets=["snapkeep", "snapkeep-nofsync", "nginx", "dufs", "express"]),
}
WRK_THREADS = 2  # the machine the issue names has 2 cores


def main():
    opts = parse_args()
    base = Path(os.environ.get("BENCH_TMP", tempfile.gettempdir()))
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="snapkeep-bench.", dir=base))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(timezone.utc)
    fstype = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", str(tmp)],
                            capture_output=True, text=True).stdout.strip()
    if fstype == "tmpfs":
        log(f"warning: {tmp} is on tmpfs, where fsync costs nothing; set BENCH_TMP to a disk")
    machine = machine_info()  # now: the work tree may change while the benchmark runs
    bench = Bench(opts, tmp)
    try:
        bench.prepare()
        bench.run_all()
    except KeyboardInterrupt:
        print("\ninterrupted; reporting what was measured", file=sys.stderr)
    finally:
        Server.stop_all()  # moto too
        if os.environ.get("BENCH_KEEP_TMP") != "1":
            remove_tree(tmp)
    if bench.records:
        machine["snapkeep_sha256"] = bench.snapkeep_sha256
        if BASELINE:  # which older binary the snapkeep-before* rows measured
            machine["baseline"] = BASELINE
            machine["baseline_sha256"] = bench.baseline_sha256
        finish(opts, bench.records, started, machine)


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("workloads", nargs="*", metavar="W", help="W1 .. W5 (default: all)")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 s runs")
    parser.add_argument("--targets", default=os.environ.get("BENCH_TARGETS", ""))
    opts = parser.parse_args()
    opts.workloads = [w.upper() for w in opts.workloads] or list(WORKLOADS)
    unknown = [w for w in opts.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    has_moto = shutil.which("moto_server") is not None
    chosen = [t for t in opts.targets.split(",") if t]
    if not chosen:
        chosen = list(DISK_PROBES) + [t for t in TARGETS if has_moto or t not in S3_TARGETS]
        if not has_moto:
            log("no moto_server on PATH: the S3 targets are left out (pip install 'moto[server]')")
    opts.targets = chosen
    unknown = [t for t in opts.targets if t not in TARGETS and t not in DISK_PROBES]
    if unknown:
        hint = "BENCH_BASELINE is not set; " if any(t.startswith("snapkeep-before")
                                                    for t in unknown) else ""
        parser.error(f"unknown target(s) {unknown}; {hint}"
                     f"choose from {list(DISK_PROBES) + list(TARGETS)}")
    if not has_moto and any(t in S3_TARGETS for t in opts.targets):
        parser.error("the S3 targets need moto_server on PATH: pip install 'moto[server]'")
    opts.repeats = int(os.environ.get("BENCH_REPEATS", "1" if opts.quick else "3"))
    opts.duration = float(os.environ.get("BENCH_DURATION", "2" if opts.quick else "6"))
    return opts


class Bench:
    def __init__(self, opts, tmp):
        self.opts, self.tmp = opts, tmp
        self.records = []
        self.runs = 0
        self.seeded = {}  # W4 scale -> data dir holding that many snapshots
        self.snapkeep_sha256 = self.baseline_sha256 = None
        self.moto = None  # the S3 targets' server, when one is selected

    def selected(self, workload):
        return [t for t in WORKLOADS[workload]["targets"] if t in self.opts.targets]

    def prepare(self):
        spread_run_dirs(self.tmp / "runs")
        self.snapkeep_sha256 = pin_binaries(self.tmp / "bin")
        if BASELINE:
            copy = BINARIES["snapkeep_before"]
            self.baseline_sha256 = hashlib.sha256(copy.read_bytes()).hexdigest()
        if any(t in S3_TARGETS for w in self.opts.workloads for t in self.selected(w)):
            self.moto = Moto(self.tmp / "moto")
            log(f"moto_server on port {self.moto.port}")
        if "W4" in self.opts.workloads and self.selected("W4"):
            for scale in W4_SCALES:
                began = time.perf_counter()
                data = self.tmp / f"seed-{scale}" / "data"
                data.mkdir(parents=True)
                seed.seed_snapshots(data, scale)
                self.seeded[scale] = data
                if scale:
                    log(f"seeded {scale} snapshots in {time.perf_counter() - began:.1f}s")
        if "W5" in self.opts.workloads and self.selected("W5"):
            self.upload = self.tmp / "upload.json"
            seed.write_big_json(self.upload, UPLOAD)
        os.sync()  # the seeds' writeback must not land in the first measurements

    def run_all(self):
        total = sum(self.count(w) for w in self.opts.workloads) * self.opts.repeats
        log(f"{total} runs of {self.opts.duration:g}s (W5: one upload each), "
            f"{self.opts.repeats} repeat(s), temp dir {self.tmp}")
        for repeat in range(self.opts.repeats):
            for workload in self.opts.workloads:
                # The order of targets turns with each repeat, so that slow phases of a shared
                # machine do not always fall on the same target.
                targets = rotate(self.selected(workload), repeat)
                scales = W4_SCALES if workload == "W4" else [None]
                for scale in rotate(scales, repeat):
                    for target in targets:
                        self.measure(repeat, workload, target, scale, total)

    def count(self, workload):
        return len(self.selected(workload)) * (len(W4_SCALES) if workload == "W4" else 1)

    def measure(self, repeat, workload, target, scale, total):
        self.runs += 1
        label = workload if scale is None else f"W4@{scale_label(scale)}"
        run_dir = self.tmp / "runs" / f"{self.runs:03d}-{label}-{target}"
        run_dir.mkdir(parents=True)
        began = time.perf_counter()
        try:
            if target in DISK_PROBES:
                result = self.disk_limit(run_dir, *DISK_PROBES[target])
            elif workload == "W5":
                result = self.upload_run(TARGETS[target], run_dir)
            elif workload == "W3":
                result = self.read_run(TARGETS[target], run_dir)
            else:
                result = self.write_run(TARGETS[target], run_dir, workload, scale)
        except Exception as err:  # one broken peer must not sink the whole benchmark
            result = dict(check_ok=False, check=f"failed: {err}".splitlines()[0][:200])
            log(f"  {err}")
        finally:
            remove_tree(run_dir)
            os.sync()  # let the next run start with no writeback of this one pending
        record = dict(repeat=repeat, workload=label, target=target, **result)
        self.records.append(record)
        log(f"[{self.runs}/{total}] {label:8} {target:23} {summary_line(record)}"
            f"  ({time.perf_counter() - began:.1f}s)")

    # --- the runs --------------------------------------------------------------------------

    def serve(self, target, run_dir, **kwargs):
        """The target's server for one run. The S3 targets use the prefix named as the run dir
        (fresh each run) in moto's bucket; moto-put and moto-get are moto itself."""
        if not target.s3:
            return Server(target, run_dir, **kwargs)
        self.moto.reset()  # moto keeps every object in memory: drop the last run's
        if target.name.startswith("moto-"):
            return MotoPeer(self.moto, run_dir.name)
        kwargs["extra_env"] = dict(kwargs.get("extra_env") or {}, **self.moto.vars(run_dir.name))
        return Server(target, run_dir, **kwargs)

    def disk_limit(self, run_dir, keep, fsync):
        argv = [str(BINARIES["disk_limit"]), str(run_dir / "data"), "16", str(self.opts.duration),
                str(keep)] + ([] if fsync else ["nofsync"])
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        ok = r["errors"] == 0 and r["ops"] > 0
        return dict(
            req_s=r["ops_per_sec"], p50_ms=r["p50_ms"], p99_ms=r["p99_ms"], errors=r["errors"],
            requests=r["ops"], check_ok=ok, check="ok" if ok else "errors",
            mib_s=r["ops_per_sec"] * SMALL / MiB,
        )

    def write_run(self, target, run_dir, workload, scale):
        spec = WORKLOADS[workload]
        data_dir, ready = None, None
        if scale is not None:
            data_dir = self.seeded[scale]
            seed.reset_bench_sessions(data_dir, scale)
            if scale:  # the first served request is a read of a seeded snapshot
                ready = "/api/backup/s0/latest"
        with self.serve(target, run_dir, data_dir=data_dir, ready_path=ready) as server:
            first_write_ms = None
            if scale is not None:  # spawn to the first acknowledged write (not a W4 session)
                body = seed.json_body(SMALL, seq=time.time_ns())
                status, _ = request(server.port, "POST", "/api/backup/probe", body, timeout=30)
                first_write_ms = (time.perf_counter() - server.spawned) * 1000
                if status != 201:
                    raise RuntimeError(f"first write: HTTP {status}")
            wrk = self.wrk(server, target.write_method, server.root + target.write_path,
                           spec["connections"], body=spec["body"],
                           session_field=target.session_field, header=target.header)
            rss = server.peak_rss_mib()
            startup = server.startup_ms
            if target.name == "json-server":
                settle_json_server(server.data_dir, wrk["requests"])
        ok_requests = wrk["requests"] - wrk["errors_status"]
        if target.s3:
            check_ok, check = self.check_objects(target, run_dir.name, ok_requests)
        else:
            check_ok, check = self.check_writes(target, server.data_dir, ok_requests, scale)
        return dict(wrk, rss_mib=rss, startup_ms=startup, check_ok=check_ok, check=check,
                    mib_s=wrk["req_s"] * spec["body"] / MiB, first_write_ms=first_write_ms)

    def check_writes(self, target, data_dir, ok_requests, scale):
        """Did the 2xx answers leave files behind? A benchmark of refused requests is worthless."""
        if ok_requests <= 0:
            return False, "no successful request"
        if not target.disk:
            return True, "keeps nothing (the HTTP stack's ceiling)"
        if scale is not None:
            written, within = seed.count_newer_than_seed(data_dir)
            expected = min(ok_requests, seed.SESSIONS * seed.PER_SESSION)
            ok = within and written >= expected
            return ok, f"{written} new snapshots in s0..s99 (want {expected})"
        if target.name == "json-server":
            found, expected = json_server_count(data_dir), ok_requests
        elif target.write_method == "PUT":
            found, expected = count_files(data_dir), ok_requests
        else:  # snapkeep and express keep the newest 10 of each of the 100 sessions
            found = count_files(data_dir)
            expected = min(ok_requests, seed.SESSIONS * seed.PER_SESSION)
        ok = found >= expected
        return ok, f"{found} on disk for {ok_requests} ok" + ("" if ok else f" (want {expected})")

    def check_objects(self, target, prefix, ok_requests):
        """check_writes for the S3 targets: the snapshot objects under the run's prefix."""
        if ok_requests <= 0:
            return False, "no successful request"
        found = self.moto.count_snapshots(prefix)
        expected = ok_requests
        if target.write_method == "POST":  # snapkeep-s3 keeps the newest 10 of each session
            expected = min(ok_requests, seed.SESSIONS * seed.PER_SESSION)
        ok = found >= expected
        return ok, f"{found} in the bucket for {ok_requests} ok" + (
            "" if ok else f" (want {expected})")

    def read_run(self, target, run_dir):
        with self.serve(target, run_dir) as server:
            for k in range(seed.SESSIONS):
                session = f"s{k}" if target.session_field else None
                path = server.root + target.seed_path.replace("{k}", str(k))
                status, _ = request(server.port, target.write_method, path,
                                    seed.json_body(SMALL, seq=k, session=session),
                                    headers=server.seed_headers)
                if status >= 300:
                    raise RuntimeError(f"seeding {path}: HTTP {status}")
            # Spot check: what W3 reads is the seeded document.
            probe = server.root + target.latest_path.replace("{k}", "7").replace("{id}", "8")
            status, body = request(server.port, "GET", probe)
            expected = seed.json_body(SMALL, seq=7, session="s7" if target.session_field else None)
            same = status == 200 and (not target.disk or
                                      without_id(json.loads(body)) == json.loads(expected))
            wrk = self.wrk(server, "GET", server.root + target.latest_path,
                           WORKLOADS["W3"]["connections"])
            rss = server.peak_rss_mib()
            startup = server.startup_ms
        ok = same and wrk["errors"] == 0 and wrk["requests"] > 0
        check = "ok" if ok else f"spot GET {probe}: {status}, same document: {same}"
        return dict(wrk, rss_mib=rss, startup_ms=startup, check_ok=ok, check=check,
                    mib_s=wrk["req_s"] * SMALL / MiB)

    def upload_run(self, target, run_dir):
        extra = {"SNAPKEEP_MAX_BODY_BYTES": str(256 * MiB)}
        with Server(target, run_dir, extra_env=extra) as server:
            url = f"http://127.0.0.1:{server.port}"
            if target.write_method == "PUT":
                argv = ["-T", str(self.upload), url + "/big/upload.json"]
            else:
                argv = ["-H", "Content-Type: application/json",
                        "--data-binary", f"@{self.upload}", url + "/api/backup/big"]
            out = subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "-w",
                 "%{http_code} %{time_total}"] + argv,
                capture_output=True, text=True, timeout=300,
            ).stdout.split()
            rss = server.peak_rss_mib()
            startup = server.startup_ms
        status, seconds = int(out[0]), float(out[1])
        sizes = [f.stat().st_size for f in (server.data_dir / "big").glob("*.json")] \
            if (server.data_dir / "big").is_dir() else []
        ok = 200 <= status < 300 and sizes == [UPLOAD]
        return dict(
            req_s=None, mib_s=UPLOAD / MiB / seconds, p50_ms=seconds * 1000,
            p99_ms=seconds * 1000, errors=0 if 200 <= status < 300 else 1, requests=1,
            rss_mib=rss, startup_ms=startup, check_ok=ok,
            check="ok" if ok else f"HTTP {status}, files of {sizes} bytes",
        )

    def wrk(self, server, method, path, connections, body=0, session_field=False, header=""):
        threads = min(WRK_THREADS, connections)
        env = dict(
            os.environ, BENCH_METHOD=method, BENCH_PATH=path, BENCH_BODY_BYTES=str(body),
            BENCH_SESSIONS=str(seed.SESSIONS), BENCH_THREADS=str(threads),
        )
        if session_field:
            env["BENCH_SESSION_FIELD"] = "1"
        env["BENCH_HEADER"] = header  # set even when empty, so that none leaks from the shell
        argv = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{self.opts.duration:g}s",
            "--timeout", "10s", "--latency", "-s", str(BENCH / "wrk" / "requests.lua"),
            f"http://127.0.0.1:{server.port}",
        ]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
        match = re.search(r"^BENCH_RESULT (.*)$", out, re.M)
        if not match:
            raise RuntimeError(f"no result from wrk:\n{out}")
        r = json.loads(match.group(1))
        seconds = r["duration_us"] / 1e6
        e = r["errors"]
        return dict(
            req_s=r["requests"] / seconds,
            p50_ms=r["latency_us"]["p50"] / 1000,
            p99_ms=r["latency_us"]["p99"] / 1000,
            errors=e["connect"] + e["read"] + e["write"] + e["timeout"] + e["status"],
            errors_status=e["status"],
            requests=r["requests"],
            wrk_errors=e,
            wrk_text=out,
        )


def finish(opts, records, started, machine):
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    took = (datetime.now(timezone.utc) - started).total_seconds()
    doc = dict(started=started.isoformat(), took_s=round(took), machine=machine,
               repeats=opts.repeats,
               duration_s=opts.duration, workloads=opts.workloads, targets=opts.targets,
               records=records, summary=report.summarize(records), goals=report.goals(records))
    (results / f"{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    markdown = report.markdown(doc)
    (results / "last.md").write_text(markdown)
    print()
    print(markdown)
    print(f"results: bench/results/{stamp}.json, bench/results/last.md", file=sys.stderr)


def machine_info():
    def first(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return " ".join((out.stdout + out.stderr).strip().splitlines()[0].split())
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    tmp = os.environ.get("BENCH_TMP", tempfile.gettempdir())
    return dict(
        cpu=cpu, cores=os.cpu_count(), memory_gib=round(mem / (1 << 20), 1),
        kernel=platform.release(), filesystem=first(["findmnt", "-no", "FSTYPE,SOURCE", "-T", tmp]),
        snapkeep=first(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        wrk=first(["wrk", "-v"]).split(" [")[0], nginx=first(["nginx", "-v"]),
        dufs=first([str(BENCH / ".tools" / "bin" / "dufs"), "-V"]), node=first(["node", "-v"]),
    )


def spread_run_dirs(runs):
    """Makes `runs` and marks it as a top of directory hierarchies (`chattr +T`), so that ext4
    puts each run's directory in a block group it chooses afresh instead of beside the last
    run's. ext4 without a journal does not reuse an inode freed in the last minute or more
    (`recently_deleted` in fs/ext4/ialloc.c: 60 s, 360 s while the inode's table block is
    dirty), and every create scans past each such inode of its group: measured here, creates
    in the group where the last run had just removed 250,000 files ran at a tenth of their
    speed (the probe without fsync: 5,000 to 9,000 writes/s instead of 100,000; 8,600 still
    30 s later), so a run's result depended on what ran before it. Where chattr cannot set
    the flag (another filesystem) it says so, and the runs go on."""
    runs.mkdir()
    flag = subprocess.run(["chattr", "+T", str(runs)], capture_output=True, text=True)
    if flag.returncode != 0:
        log(f"note: chattr +T {runs} failed ({flag.stderr.strip()}); on ext4 a run may pay "
            "for the inodes the run before it freed")


def settle_json_server(data_dir, answered, timeout=20.0):
    """json-server answers a POST a moment before its db.json holds it (it then rewrites the
    whole file), and works off what wrk left in flight. Wait until the file holds every
    answered write (the check fails if it never does)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline and json_server_count(data_dir) < answered:
        time.sleep(0.1)


def without_id(document):
    """json-server adds an "id" to what it stores."""
    if isinstance(document, dict):
        return {k: v for k, v in document.items() if k != "id"}
    return document


def rotate(items, n):
    n %= max(1, len(items))
    return items[n:] + items[:n]


def scale_label(scale):
    return f"{scale // 1000}k" if scale >= 1000 else str(scale)


def summary_line(r):
    if not r.get("check_ok") and "req_s" not in r:
        return r.get("check", "failed")
    rate = f"{r['req_s']:9.0f} req/s" if r.get("req_s") is not None else f"{r['mib_s']:7.1f} MiB/s"
    rss = f"  rss {r['rss_mib']:.1f} MiB" if r.get("rss_mib") is not None else ""
    return f"{rate}  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}{rss}  check: {r['check']}"


def log(text):
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

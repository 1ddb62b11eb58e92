"""The servers bench/run measures: how to start each one on loopback with a fresh data dir, which
paths its writes and reads use, when it is ready, how much memory it used, and how to stop it.
Also moto's S3 server, which holds the bucket of the S3 targets."""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# What bench/run built; pin_binaries() swaps in copies, so that a rebuild in the work tree
# during a run cannot change what is measured halfway.
BINARIES = {
    "snapkeep": REPO / "target" / "release" / "snapkeep",
    "disk_limit": REPO / "target" / "release" / "examples" / "disk_limit",
    "http_floor": REPO / "target" / "release" / "examples" / "http_floor",
}
# An older snapkeep for A/B runs of the directory backend (the snapkeep-before* targets).
BASELINE = os.environ.get("BENCH_BASELINE")
if BASELINE:
    BINARIES["snapkeep_before"] = Path(BASELINE)
DUFS_BIN = BENCH / ".tools" / "bin" / "dufs"
JSON_SERVER_JS = BENCH / "node_modules" / "json-server" / "lib" / "cli" / "bin.js"


@dataclass(frozen=True)
class Target:
    """One server under test, and the HTTP shape of its API."""

    name: str
    write_method: str  # POST or PUT
    write_path: str  # template for bench/wrk/requests.lua: {k} session, {id} k+1, {n} {t}
    latest_path: str  # where W3 reads a session's newest snapshot
    seed_path: str  # where W3's seeding writes it
    ready_path: str
    session_field: bool = False  # the session goes into the body (json-server)
    fsync: bool = False  # makes each write durable before answering
    disk: bool = True  # keeps what it is sent (http-floor answers from memory, keeps nothing)
    s3: bool = False  # keeps it in moto's bucket, not in a data dir
    binary: str = "snapkeep"  # the snapkeep* targets: which of BINARIES
    header: str = ""  # one more header on wrk's requests ("Name: value")
    env: dict = field(default_factory=dict)


SNAPKEEP = dict(
    write_method="POST",
    write_path="/api/backup/s{k}",
    latest_path="/api/backup/s{k}/latest",
    seed_path="/api/backup/s{k}",
    ready_path="/readyz",
)
PUT_PEER = dict(
    write_method="PUT",
    write_path="/s{k}/{n}-{t}.json",
    latest_path="/s{k}/latest.json",
    seed_path="/s{k}/latest.json",
    ready_path="/",
)

TARGETS = {
    t.name: t
    for t in [
        Target("snapkeep", fsync=True, env={"SNAPKEEP_FSYNC": "true"}, **SNAPKEEP),
        Target("snapkeep-nofsync", env={"SNAPKEEP_FSYNC": "false"}, **SNAPKEEP),
        # The HTTP stack's ceiling: tokio + hyper + axum answering from memory (no disk).
        Target("http-floor", disk=False, **dict(SNAPKEEP, ready_path="/api/backup/s0/latest")),
        # The same stack doing the rotating disk probe's durable write per POST (W1 only).
        Target("http-disk", fsync=True, **dict(SNAPKEEP, ready_path="/api/backup/s0/latest")),
        Target("nginx", **PUT_PEER),
        Target("dufs", **PUT_PEER),
        Target(
            "express",
            write_method="POST",
            write_path="/api/backup/s{k}",
            latest_path="/api/backup/s{k}/latest",
            seed_path="/api/backup/s{k}",
            ready_path="/healthz",
        ),
        Target(
            "json-server",
            write_method="POST",
            write_path="/snapshots",
            latest_path="/snapshots/{id}",
            seed_path="/snapshots",
            ready_path="/snapshots",
            session_field=True,
        ),
        # The bucket and prefix are the run's (see Bench.serve).
        Target("snapkeep-s3", s3=True, **SNAPKEEP),
        # What a plain S3 client does for the same work: one PUT that must not replace an
        # object, as snapkeep's own snapshot PUT. Sent to moto itself, under the run's prefix.
        Target("moto-put", s3=True, header="If-None-Match: *", **PUT_PEER),
        Target("moto-get", s3=True, **PUT_PEER),
    ]
}
if BASELINE:  # the older binary, run exactly as the first two (A/B runs of the data dir)
    TARGETS.update({
        t.name: t
        for t in [
            Target("snapkeep-before", binary="snapkeep_before", fsync=True,
                   env={"SNAPKEEP_FSYNC": "true"}, **SNAPKEEP),
            Target("snapkeep-before-nofsync", binary="snapkeep_before",
                   env={"SNAPKEEP_FSYNC": "false"}, **SNAPKEEP),
        ]
    })
# Not a target: the S3 server the S3 targets use (see Moto).
BUCKET = "snapkeep-bench"
MOTO = Target("moto", disk=False, **PUT_PEER)
S3_TARGETS = [name for name, t in TARGETS.items() if t.s3]


def pin_binaries(directory):
    """Copies the built binaries (and BENCH_BASELINE's) into `directory` and runs those; returns
    snapkeep's SHA-256."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, path in BINARIES.items():
        if not path.exists():
            if name == "snapkeep_before":
                raise SystemExit(f"BENCH_BASELINE={path} is missing")
            raise SystemExit(f"{path} is missing: run bench/run, which builds it")
        copy = directory / name
        shutil.copy2(path, copy)
        BINARIES[name] = copy
    return hashlib.sha256(BINARIES["snapkeep"].read_bytes()).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, timeout=5.0, headers=None):
    """One HTTP request on a new connection; returns (status, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = dict({"Content-Type": "application/json"} if body is not None else {},
                       **(headers or {}))
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    """A running target. Use as a context manager: it is stopped however the block ends."""

    live = set()  # every Server not yet stopped, for the exit handler
    root = ""  # prepended to the target's paths (see MotoPeer)
    seed_headers = {}  # sent with W3's seeding writes (see MotoPeer)

    def __init__(self, target, run_dir, extra_env=None, ready_path=None, data_dir=None):
        self.target = target
        self.run_dir = Path(run_dir)
        self.data_dir = Path(data_dir) if data_dir else self.run_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.run_dir / "server.log"
        argv, env = self._command(extra_env or {})
        self.log = open(self.log_path, "wb")
        self.spawned = spawned = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches its workers
        )
        Server.live.add(self)
        try:
            self._wait_ready(ready_path or target.ready_path)
        except BaseException:
            self.stop()
            raise
        self.startup_ms = (time.perf_counter() - spawned) * 1000

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _command(self, extra_env):
        # AWS_* too: snapkeep-s3 gets exactly moto's, none of the shell's (a profile, a token).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPKEEP_", "AWS_"))}
        name = self.target.name
        if name.startswith("snapkeep"):
            env.update(
                SNAPKEEP_LISTEN=f"127.0.0.1:{self.port}",
                SNAPKEEP_DATA_DIR=str(self.data_dir),
                # Request logs are off for every target (nginx: access_log off).
                SNAPKEEP_LOG=os.environ.get("BENCH_SNAPKEEP_LOG", "warn"),
            )
            env.update(self.target.env)
            env.update(extra_env)
            return [str(BINARIES[self.target.binary])], env
        if name == "moto":
            return ["moto_server", "-H", "127.0.0.1", "-p", str(self.port)], env
        if name == "http-floor":
            return [str(BINARIES["http_floor"]), f"127.0.0.1:{self.port}"], env
        if name == "http-disk":
            return [str(BINARIES["http_floor"]), f"127.0.0.1:{self.port}", str(self.data_dir)], env
        if name == "nginx":
            conf = (BENCH / "nginx.conf.template").read_text()
            values = {
                "user": "user root;" if os.geteuid() == 0 else "",
                "run_dir": str(self.run_dir),
                "data_dir": str(self.data_dir),
                "port": str(self.port),
            }
            for key, value in values.items():
                conf = conf.replace("{" + key + "}", value)
            conf_path = self.run_dir / "nginx.conf"
            conf_path.write_text(conf)
            argv = ["nginx", "-e", str(self.run_dir / "error.log"), "-p", str(self.run_dir)]
            return argv + ["-c", str(conf_path)], env
        if name == "dufs":
            argv = [str(DUFS_BIN), "--allow-upload", "-b", "127.0.0.1", "-p", str(self.port)]
            return argv + ["--log-format", "", str(self.data_dir)], env
        if name == "express":
            env.update(PORT=str(self.port), DATA_DIR=str(self.data_dir))
            return ["node", str(BENCH / "express-server.js")], env
        if name == "json-server":
            db = self.data_dir / "db.json"
            db.write_text('{"snapshots": []}\n')
            argv = ["node", str(JSON_SERVER_JS), str(db), "--port", str(self.port)]
            return argv + ["--host", "127.0.0.1", "--quiet"], env
        raise ValueError(f"unknown target {name}")

    def _wait_ready(self, path, timeout=60.0):
        """Polls tightly until `path` answers: 200 for snapkeep, any answer for the peers."""
        strict = self.target.name.startswith("snapkeep")
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target.name} exited at start:\n{self.log_tail()}")
            try:
                status, _ = request(self.port, "GET", path, timeout=2.0)
                if status == 200 or (not strict and status < 500):
                    return
            except (ConnectionError, OSError, http.client.HTTPException):
                pass
            time.sleep(0.0005)
        raise RuntimeError(f"{self.target.name} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines=20):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pids(self):
        """The server's process and all its descendants (nginx's workers)."""
        children = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry.name))
                except (OSError, ValueError, IndexError):
                    pass
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def peak_rss_mib(self):
        """Sum of VmHWM (peak resident memory) over the server's processes, in MiB."""
        total_kib = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total_kib += int(line.split()[1])
            except OSError:
                pass
        return total_kib / 1024

    def stop(self):
        if self not in Server.live:
            return
        Server.live.discard(self)
        if self.proc.poll() is None:
            # nginx: SIGQUIT is its graceful stop, SIGTERM its fast one. Fast for all.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    @classmethod
    def stop_all(cls):
        for server in list(cls.live):
            server.stop()


class Moto(Server):
    """moto's S3 server, started once per bench run when an S3 target is selected: the bucket of
    snapkeep-s3, and itself the moto-put / moto-get targets. Each run takes a fresh prefix. moto
    keeps every object in memory, so it is reset before each S3 run: runs late in the benchmark
    find it as empty and small as the first did."""

    def __init__(self, run_dir):
        super().__init__(MOTO, run_dir)
        self.create_bucket()

    def create_bucket(self):
        status, body = request(self.port, "PUT", f"/{BUCKET}")  # unsigned: moto takes it
        if status != 200:
            raise RuntimeError(f"creating the bucket in moto: HTTP {status} {body[:200]!r}")

    def reset(self):
        """Drops every object (and the bucket, made again)."""
        status, _ = request(self.port, "POST", "/moto-api/reset", timeout=60)
        if status != 200:
            raise RuntimeError(f"resetting moto: HTTP {status}")
        self.create_bucket()

    def vars(self, prefix):
        """What points snapkeep at `prefix` in the bucket."""
        return dict(
            SNAPKEEP_STORAGE=f"s3://{BUCKET}/{prefix}",
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{self.port}",
            AWS_ALLOW_HTTP="true",
            AWS_ACCESS_KEY_ID="x",
            AWS_SECRET_ACCESS_KEY="y",
            AWS_REGION="us-east-1",
        )

    def count_snapshots(self, prefix):
        """Objects under `prefix` named *.json, snapkeep's head.json objects left out; with
        ListObjectsV2 (unsigned), page by page (moto gives at most 1000 keys a page)."""
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        total, token = 0, None
        while True:
            query = {"list-type": "2", "prefix": prefix + "/", "max-keys": "1000"}
            if token:
                query["continuation-token"] = token
            status, body = request(self.port, "GET",
                                   f"/{BUCKET}?{urllib.parse.urlencode(query)}", timeout=60)
            if status != 200:
                raise RuntimeError(f"listing {prefix}: HTTP {status}")
            root = ET.fromstring(body)
            keys = [k.text for k in root.iter(ns + "Key")]
            total += sum(1 for k in keys if k.endswith(".json") and not k.endswith("/head.json"))
            token = root.findtext(ns + "NextContinuationToken")
            if root.findtext(ns + "IsTruncated") != "true" or not token:
                return total


class MotoPeer:
    """moto-put and moto-get: requests straight to the shared moto, under the run's prefix.
    Nothing is started, and moto's peak RSS spans the whole benchmark: neither is reported."""

    startup_ms = None
    # moto serves an unsigned GET (wrk's) of an object only if its ACL lets anyone read it.
    seed_headers = {"x-amz-acl": "public-read"}

    def __init__(self, moto, prefix):
        self.port = moto.port
        self.root = f"/{BUCKET}/{prefix}"  # prepended to the target's paths

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def peak_rss_mib(self):
        return None


def count_files(data_dir, prefix="s"):
    """Files (not dotfiles) in the session directories directly under `data_dir`."""
    total = 0
    for session in Path(data_dir).iterdir():
        if session.is_dir() and session.name.startswith(prefix):
            total += sum(1 for f in os.scandir(session) if not f.name.startswith("."))
    return total


def json_server_count(data_dir):
    try:
        return len(json.loads((Path(data_dir) / "db.json").read_text())["snapshots"])
    except (OSError, ValueError, KeyError):
        return -1


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)

"""The change feed under many subscribers (issue 15): N open feeds on one session, one write,
and how long until each subscriber has the event; and the server's memory per idle feed.

    python3 bench/fanout.py [--binary target/release/snapkeep] [--subscribers 1000]
                            [--idle 1000,10000] [--writes 5]

Prints a markdown table and writes bench/results/fanout-<time>.json. The subscribers are
asyncio connections of this process (raw HTTP/1.1, as a browser's fetch would read them);
times are from just before the write's request is sent to the moment a subscriber has read
the event's `id:` line, so they include the write itself and the reading on this side."""

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SESSION = "fan"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", default=str(REPO / "target" / "release" / "snapkeep"))
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--idle", default="1000,10000")
    parser.add_argument("--writes", type=int, default=5)
    opts = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it too
    idle = [int(n) for n in opts.idle.split(",") if n]
    result = asyncio.run(run(opts, idle))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / f"fanout-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(report(result))


async def run(opts, idle):
    with tempfile.TemporaryDirectory(prefix="snapkeep-fanout.") as tmp:
        server = Server(opts.binary, Path(tmp) / "data", max(idle + [opts.subscribers]) + 100)
        try:
            await server.post(b'{"n":0}')
            base_rss = server.rss_kib()
            fan = []
            streams = await open_streams(server.port, opts.subscribers)
            await asyncio.sleep(0.5)
            for n in range(1, opts.writes + 1):
                fan.append(await one_write(server, streams, n))
                await asyncio.sleep(0.2)
            await close_streams(streams)
            await asyncio.sleep(0.5)
            memory = []
            for count in idle:
                streams = await open_streams(server.port, count)
                await asyncio.sleep(1.0)
                rss = server.rss_kib()
                memory.append(dict(streams=count, rss_kib=rss, base_kib=base_rss,
                                   per_stream_kib=(rss - base_rss) / count))
                await close_streams(streams)
                await asyncio.sleep(1.0)
        finally:
            server.stop()
    return dict(subscribers=opts.subscribers, writes=fan, memory=memory,
                p50_ms=statistics.median(w["p50_ms"] for w in fan),
                p99_ms=statistics.median(w["p99_ms"] for w in fan),
                last_ms=statistics.median(w["last_ms"] for w in fan))


class Server:
    def __init__(self, binary, data, streams):
        env = dict(os.environ, SNAPKEEP_LISTEN="127.0.0.1:0", SNAPKEEP_DATA_DIR=str(data),
                   SNAPKEEP_LOG="warn,snapkeep::server=info", SNAPKEEP_MAX_STREAMS=str(streams),
                   SNAPKEEP_FSYNC="false")
        self.process = subprocess.Popen([binary], env=env, stderr=subprocess.PIPE, text=True)
        for line in self.process.stderr:
            if "listening on http://" in line:
                self.port = int(line.split("listening on http://")[1].split("/")[0].split(":")[1])
                break
        else:
            raise RuntimeError("snapkeep did not start")

    async def post(self, body):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"POST /api/backup/%s HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (SESSION.encode(), len(body), body))
        await writer.drain()
        answer = await reader.read()
        writer.close()
        if b" 201 " not in answer.split(b"\r\n")[0]:
            raise RuntimeError(answer[:200])
        return json.loads(answer.split(b"\r\n\r\n", 1)[1])["id"]

    def rss_kib(self):
        for line in open(f"/proc/{self.process.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=15)


async def open_streams(port, count):
    """`count` feeds of the session, each on its own connection, past their catch-up event."""
    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/backup/%s/events HTTP/1.1\r\nHost: b\r\n\r\n" % SESSION.encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(status)
        await skip_event(reader)  # the catch-up: the latest, at once
        return reader, writer
    streams = []
    for start in range(0, count, 500):  # not all at once: the listen backlog
        streams += await asyncio.gather(*(one() for _ in range(min(500, count - start))))
    return streams


async def skip_event(reader):
    while True:
        line = await reader.readline()
        if line.startswith(b"id:") or not line:
            return


async def one_write(server, streams, n):
    async def wait(reader):
        while True:
            line = await reader.readline()
            if line.startswith(b"id:"):
                return time.perf_counter()
            if not line:
                raise RuntimeError("a feed ended")
    waiting = [asyncio.ensure_future(wait(reader)) for reader, _ in streams]
    await asyncio.sleep(0)
    started = time.perf_counter()
    await server.post(b'{"n":%d}' % n)
    times = sorted((t - started) * 1000 for t in await asyncio.gather(*waiting))
    return dict(p50_ms=times[len(times) // 2], p99_ms=times[int(len(times) * 0.99) - 1],
                last_ms=times[-1])


async def close_streams(streams):
    for _, writer in streams:
        writer.close()


def report(r):
    lines = [
        f"Change feed: {r['subscribers']} subscribers of one session, {len(r['writes'])} writes "
        "(medians over the writes)",
        "",
        "| figure | measured | goal |",
        "|---|--:|---|",
        f"| p50 time to a subscriber | {r['p50_ms']:.1f} ms | |",
        f"| p99 time to a subscriber | {r['p99_ms']:.1f} ms | < 100 ms |",
        f"| time to the last subscriber | {r['last_ms']:.1f} ms | |",
    ]
    for m in r["memory"]:
        lines.append(f"| RSS per idle stream, {m['streams']} streams | {m['per_stream_kib']:.1f} KiB "
                     f"({m['base_kib'] / 1024:.1f} → {m['rss_kib'] / 1024:.1f} MiB) | < 16 KiB |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Test data for bench/run: JSON bodies of an exact size, snapshots written straight into
snapkeep's on-disk layout (for W4), and the 200 MiB upload (for W5)."""

import hashlib
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

SESSIONS = 100  # the benchmark's sessions: s0 .. s99
PER_SESSION = 10  # snapkeep's default SNAPKEEP_RETAIN_LAST
SEED_EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)


def json_body(size, seq=0, session=None):
    """A JSON document of exactly `size` bytes (at least ~40)."""
    head = f'{{"seq":{seq}' + (f',"session":"{session}"' if session else "") + ',"state":"'
    return (head + "x" * (size - len(head) - 2) + '"}').encode()


def snapshot_name(when, content):
    """snapkeep's file name for `content` written at `when` (see src/store/name.rs)."""
    digest = hashlib.sha256(content).hexdigest()[:16]
    return when.strftime("%Y%m%dT%H%M%S.%fZ") + f"-{digest}.json"


def write_session(data_dir, session, body_size=4096):
    """Ten snapshots of session number `session`, with times in the past (2025)."""
    directory = Path(data_dir) / f"s{session}"
    directory.mkdir(parents=True, exist_ok=True)
    for j in range(PER_SESSION):
        content = json_body(body_size, seq=session * PER_SESSION + j)
        when = SEED_EPOCH + timedelta(seconds=j, microseconds=session)
        (directory / snapshot_name(when, content)).write_bytes(content)


def seed_snapshots(data_dir, total):
    """`total` snapshots (10 per session, sessions s0 .. s<total/10 - 1>) in snapkeep's layout."""
    for session in range(total // PER_SESSION):
        write_session(data_dir, session)


def reset_bench_sessions(data_dir, seeded):
    """Puts s0 .. s99 back as seeded (W4 runs write to them), leaving every other session."""
    for session in range(SESSIONS):
        shutil.rmtree(Path(data_dir) / f"s{session}", ignore_errors=True)
        if session * PER_SESSION < seeded:
            write_session(data_dir, session)


def count_newer_than_seed(data_dir):
    """Snapshots in s0 .. s99 written by the server (newer than the seeded ones), and whether
    every one of those sessions holds at most PER_SESSION snapshots."""
    newer, within_retention = 0, True
    cutoff = (SEED_EPOCH + timedelta(days=1)).strftime("%Y%m%dT")
    for session in range(SESSIONS):
        directory = Path(data_dir) / f"s{session}"
        if not directory.is_dir():
            continue
        names = [n for n in os.listdir(directory) if n.endswith(".json") and n[0] != "."]
        within_retention &= len(names) <= PER_SESSION
        newer += sum(1 for n in names if n > cutoff)
    return newer, within_retention


def write_big_json(path, size):
    """A compact JSON document of exactly `size` bytes: an array of small records, the shape of
    real app state, written in pieces. JSON.parse + JSON.stringify gives the same bytes back."""
    record = '{"id":"%09d","done":false,"text":"' + "lorem ipsum dolor sit amet " * 3 + '"}'
    one = len(record % 0) + 1  # with its comma
    head, middle, tail = '{"items":[', '],"pad":"', '"}'
    count = (size - len(head) - len(middle) - len(tail)) // one
    filler = size - len(head) - (count * one - 1) - len(middle) - len(tail)
    with open(path, "w") as out:
        out.write(head)
        for start in range(0, count, 10000):
            end = min(count, start + 10000)
            out.write(",".join(record % i for i in range(start, end)))
            if end < count:
                out.write(",")
        out.write(middle + "x" * filler + tail)
    assert os.path.getsize(path) == size, (os.path.getsize(path), size)

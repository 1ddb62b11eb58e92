"""Turns bench/run's raw records into medians, the targets' ratios (each measured within one
repeat, then the median over repeats), and the markdown report."""

from statistics import median

WORKLOAD_ORDER = ["W1", "W2", "W3", "W4@0", "W4@10k", "W4@100k", "W5"]
TARGET_ORDER = ["disk-limit", "disk-rotating", "disk-nofsync", "disk-nofsync-rotating", "snapkeep",
                "snapkeep-nofsync", "snapkeep-before", "snapkeep-before-nofsync", "http-floor", "http-disk",
                "nginx", "dufs", "express", "json-server", "snapkeep-s3", "moto-put", "moto-get"]
BY_BYTES = {"W2", "W5"}  # compared by MiB/s; the others by req/s

# (name, numerator (workload, target), denominator (workload, target), metric, at least)
# W1's references do the same work as snapkeep's writes: create, write, (fsync,) rename,
# (fsync the directory,) and delete the file from 10 writes back, as keep-last does.
RATIO_GOALS = [
    ("W1 durable ÷ disk probe with retention's deletes",
     ("W1", "snapkeep"), ("W1", "disk-rotating"), "req_s", 0.9),
    ("W1 no fsync ÷ disk probe with deletes, no fsync",
     ("W1", "snapkeep-nofsync"), ("W1", "disk-nofsync-rotating"), "req_s", 1.0),
    ("W2 no fsync ÷ nginx PUT, MiB/s", ("W2", "snapkeep-nofsync"), ("W2", "nginx"), "mib_s", 0.9),
    ("W3 GET latest ÷ nginx static", ("W3", "snapkeep"), ("W3", "nginx"), "req_s", 0.8),
    ("W4 durable: 100k existing ÷ empty", ("W4@100k", "snapkeep"), ("W4@0", "snapkeep"),
     "req_s", 0.9),
    ("W4 no fsync: 100k existing ÷ empty", ("W4@100k", "snapkeep-nofsync"),
     ("W4@0", "snapkeep-nofsync"), "req_s", 0.9),
    # On a bucket: snapkeep against a plain client of the same moto doing the same work.
    ("S3 W1: snapkeep-s3 ÷ moto-put, req/s", ("W1", "snapkeep-s3"), ("W1", "moto-put"), "req_s",
     0.8),
    ("S3 W3: snapkeep-s3 ÷ moto-get", ("W3", "snapkeep-s3"), ("W3", "moto-get"), "req_s", 0.8),
]
# Shown when BENCH_BASELINE ran: the directory backend must not have lost to the older binary.
BASELINE_GOALS = [
    ("W1 durable: snapkeep ÷ snapkeep-before", ("W1", "snapkeep"), ("W1", "snapkeep-before"),
     "req_s", 0.95),
    ("W1 no fsync: snapkeep-nofsync ÷ snapkeep-before-nofsync", ("W1", "snapkeep-nofsync"),
     ("W1", "snapkeep-before-nofsync"), "req_s", 0.95),
    ("W2 MiB/s, no fsync: snapkeep-nofsync ÷ snapkeep-before-nofsync", ("W2", "snapkeep-nofsync"),
     ("W2", "snapkeep-before-nofsync"), "mib_s", 0.95),
    ("W3: snapkeep ÷ snapkeep-before", ("W3", "snapkeep"), ("W3", "snapkeep-before"), "req_s",
     0.95),
]
# Not targets: how far the HTTP stack alone (tokio + hyper + axum, no disk) gets next to nginx,
# which bounds what snapkeep can reach on the same machine. (name, numerator, denominator, metric)
INFO_RATIOS = [
    ("(info) W1 durable ÷ disk limit without deletes", ("W1", "snapkeep"), ("W1", "disk-limit"),
     "req_s"),
    ("(info) W1 no fsync ÷ nginx PUT", ("W1", "snapkeep-nofsync"), ("W1", "nginx"), "req_s"),
    ("(info) disk, no fsync: with retention's deletes ÷ without", ("W1", "disk-nofsync-rotating"),
     ("W1", "disk-nofsync"), "req_s"),
    ("(info) W1 durable ÷ HTTP stack doing the rotating probe's write", ("W1", "snapkeep"),
     ("W1", "http-disk"), "req_s"),
    ("(info) HTTP stack doing the rotating probe's write ÷ the probe", ("W1", "http-disk"),
     ("W1", "disk-rotating"), "req_s"),
    ("(info) W1 HTTP stack ceiling ÷ nginx PUT", ("W1", "http-floor"), ("W1", "nginx"), "req_s"),
    ("(info) W2 HTTP stack ceiling ÷ nginx PUT, MiB/s", ("W2", "http-floor"), ("W2", "nginx"),
     "mib_s"),
    ("(info) W3 HTTP stack ceiling ÷ nginx static", ("W3", "http-floor"), ("W3", "nginx"),
     "req_s"),
]
# (name, workloads, at most MiB): the highest peak RSS of snapkeep (either fsync mode), any run
RSS_GOALS = [("peak RSS W1", ["W1"], 32), ("peak RSS W3", ["W3"], 32),
             ("peak RSS W2", ["W2"], 64), ("peak RSS W5 (200 MiB upload)", ["W5"], 64)]
STARTUP_GOAL = ("start-up with 100k snapshots, ms to first served GET", "W4@100k", 200)
# Whose RSS and start-up the goals above are about: the binary under test on a data dir (not
# the baseline, not the bucket).
SNAPKEEP = ("snapkeep", "snapkeep-nofsync")


def good(records):
    return [r for r in records if r.get("check_ok")]


def metric_of(workload):
    return "mib_s" if workload in BY_BYTES else "req_s"


def order_key(key):
    workload, target = key
    w = WORKLOAD_ORDER.index(workload) if workload in WORKLOAD_ORDER else 99
    t = TARGET_ORDER.index(target) if target in TARGET_ORDER else 99
    return w, t


def med(rows, field):
    values = [r[field] for r in rows if r.get(field) is not None]
    return median(values) if values else None


def per_repeat_ratios(records, num, den, metric):
    """num/den for each repeat that measured both, both checked ok."""
    index = {(r["repeat"], r["workload"], r["target"]): r for r in good(records)}
    ratios = []
    for repeat in sorted({r["repeat"] for r in records}):
        a, b = index.get((repeat, *num)), index.get((repeat, *den))
        if a and b and a.get(metric) and b.get(metric):
            ratios.append(a[metric] / b[metric])
    return ratios


def snapkeep_for(workload, target):
    """The snapkeep a peer is compared with: durable against the fsyncing disk probes and for
    reads, otherwise (no HTTP peer fsyncs) the no-fsync one; on moto, snapkeep-s3."""
    if target.startswith("moto-"):
        return "snapkeep-s3"
    if target in ("disk-limit", "disk-rotating", "http-disk") or workload == "W3":
        return "snapkeep"
    return "snapkeep-nofsync"


def summarize(records):
    groups = {}
    for r in records:
        groups.setdefault((r["workload"], r["target"]), []).append(r)
    rows = []
    for (workload, target), runs in sorted(groups.items(), key=lambda kv: order_key(kv[0])):
        ok = good(runs)
        failed = [r.get("check", "failed") for r in runs if not r.get("check_ok")]
        ratio = None
        if not target.startswith("snapkeep"):
            ratios = per_repeat_ratios(records, (workload, snapkeep_for(workload, target)),
                                       (workload, target), metric_of(workload))
            ratio = median(ratios) if ratios else None
        rows.append(dict(
            workload=workload, target=target, runs=len(runs), ok_runs=len(ok),
            req_s=med(ok, "req_s"), mib_s=med(ok, "mib_s"), p50_ms=med(ok, "p50_ms"),
            p99_ms=med(ok, "p99_ms"), errors=sum(r.get("errors") or 0 for r in runs),
            rss_mib=max((r["rss_mib"] for r in runs if r.get("rss_mib") is not None), default=None),
            startup_ms=med(ok, "startup_ms"), snapkeep_ratio=ratio,
            check="ok" if not failed else failed[0],
        ))
    return rows


def goals(records):
    out = []
    ran_baseline = any(r["target"].startswith("snapkeep-before") for r in records)
    for name, num, den, metric, least in RATIO_GOALS + (BASELINE_GOALS if ran_baseline else []):
        ratios = per_repeat_ratios(records, num, den, metric)
        value = median(ratios) if ratios else None
        out.append(dict(goal=name, value=value, want=f"≥ {least:g}×", unit="×",
                        met=None if value is None else value >= least,
                        per_repeat=[round(x, 3) for x in ratios]))
    for name, num, den, metric in INFO_RATIOS:
        ratios = per_repeat_ratios(records, num, den, metric)
        if ratios:
            out.append(dict(goal=name, value=median(ratios), want="", unit="×", met="info",
                            per_repeat=[round(x, 3) for x in ratios]))
    for name, workloads, most in RSS_GOALS:
        rss = [r["rss_mib"] for r in records if r["workload"] in workloads
               and r["target"] in SNAPKEEP and r.get("rss_mib") is not None]
        value = max(rss) if rss else None
        out.append(dict(goal=name, value=value, want=f"< {most} MiB", unit="MiB",
                        met=None if value is None else value < most,
                        per_repeat=[round(x, 1) for x in rss]))
    name, workload, most = STARTUP_GOAL
    times = [r["startup_ms"] for r in good(records)
             if r["workload"] == workload and r["target"] in SNAPKEEP]
    value = median(times) if times else None
    out.append(dict(goal=name, value=value, want=f"< {most} ms", unit="ms",
                    met=None if value is None else value < most,
                    per_repeat=[round(x, 1) for x in times]))
    # Not a target of issue 6, but what start-up costs a client that writes at once.
    times = [r["first_write_ms"] for r in good(records) if r["workload"] == workload
             and r["target"] in SNAPKEEP and r.get("first_write_ms") is not None]
    out.append(dict(goal="(info) with 100k snapshots, ms from spawn to the first 201",
                    value=median(times) if times else None, want="", unit="ms", met="info",
                    per_repeat=[round(x, 1) for x in times]))
    return out


def fmt(value, digits=1, thousands=False):
    if value is None:
        return "—"
    if thousands:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def markdown(doc):
    m = doc["machine"]
    lines = [
        f"## snapkeep benchmark, {doc['started'][:19].replace('T', ' ')} UTC",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"data on {m['filesystem']}. snapkeep {m['snapkeep']}; {m['nginx']}; {m['dufs']}; "
        f"node {m['node']}; {m['wrk']}."
        + (f" Baseline {m['baseline']} (sha256 {m['baseline_sha256'][:12]})."
           if m.get("baseline") else ""),
        f"Medians of {doc['repeats']} interleaved repeat(s) of {doc['duration_s']:g} s each "
        "(W5: one upload); errors summed and peak RSS the highest over all repeats. "
        f"The run took {doc['took_s'] / 60:.1f} min.",
        "",
        "| target | workload | req/s | MiB/s | p50 ms | p99 ms | errors | peak RSS MiB "
        "| start ms | snapkeep ÷ it | check |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in doc["summary"]:
        ratio = "" if r["snapkeep_ratio"] is None else f"{r['snapkeep_ratio']:.2f}×"
        if ratio and snapkeep_for(r["workload"], r["target"]) == "snapkeep-nofsync":
            ratio += " ⁿ"
        lines.append(
            f"| {r['target']} | {r['workload']} | {fmt(r['req_s'], thousands=True)} "
            f"| {fmt(r['mib_s'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} "
            f"| {r['errors']} | {fmt(r['rss_mib'])} | {fmt(r['startup_ms'])} | {ratio} "
            f"| {r['check']} |"
        )
    lines += [
        "",
        "ⁿ compared with snapkeep-nofsync (no peer fsyncs); W3 and the fsyncing disk probes with "
        "snapkeep (fsync on). disk-*: examples/disk_limit, no HTTP (-rotating: each write also "
        "deletes the session's file from 10 writes back, as retention does). W2 and W5 ratios are of MiB/s, the others of req/s. W5's p50/p99 is the "
        "upload's time. start ms: spawn to first answered request (W4@10k/100k: first 200 GET "
        "of a seeded snapshot; page cache warm). moto-put and moto-get (moto's S3 server, "
        "asked directly) are compared with snapkeep-s3 (snapkeep on a bucket of that moto); "
        "moto runs for the whole benchmark, so it has no RSS or start time of its own. "
        "snapkeep-before*: BENCH_BASELINE, an older snapkeep.",
        "",
        "### Targets",
        "",
        "| target | measured | goal | per repeat | |",
        "|---|--:|---|---|---|",
    ]
    for g in doc["goals"]:
        value = "—" if g["value"] is None else (
            f"{g['value']:.2f}×" if g["unit"] == "×" else f"{g['value']:.1f} {g['unit']}")
        verdict = {True: "met", False: "**missed**", None: "not measured", "info": ""}[g["met"]]
        per = ", ".join(str(x) for x in g["per_repeat"])
        lines.append(f"| {g['goal']} | {value} | {g['want']} | {per} | {verdict} |")
    return "\n".join(lines) + "\n"

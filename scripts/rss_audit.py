#!/usr/bin/env python3
"""Peak memory (RSS) and wall time of `georob audit` on a large digits set: does memory stay flat?

    .venv/bin/python scripts/rss_audit.py [--georob target/release/georob] \\
        [--sizes 1000,10000] [--work /tmp/georob-rss] [--threads N] [--max-rss-mb 1024] \\
        [--measures cheap|default] [--chunk N] [--shards N [--parallel P] [--resume]] [--no-whole] [--merge-at M]

Run from anywhere; relative paths are taken from the repository root (the folder above scripts/).

1. For each size N (default 1,000 and 10,000) an N-image digits set is built by repeating the 450-image test
   split onnx_models/digits/test_x.npy / test_y.npy (row i = test row i mod 450) and written to
   WORK/digits_N_x.npy / digits_N_y.npy (float32 (N,1,28,28), int64 (N,)); nothing is written to the repo.
2. A suite is written to WORK/suite_N.toml: data/labels as above, bounds [0,1], seed 0, model
   onnx_models/digits/digits_cnn.onnx, and with `--measures cheap` (the default) the cheap per-image measures
   `accuracy`, `deepfool` (defaults) and `grid` with params {angles = 5, shifts = 3, k = 2}; with
   `--measures default` no [[measures]], i.e. georob's default suite (accuracy, deepfool, noise, uap, manifool
   rigid and affine, grid).
3. Unless --no-whole, `GEOROB audit WORK/suite_N.toml --out WORK/out_N --backend tract --quiet [--threads N]
   [--chunk N]` is run as a child process. Its peak RSS is the kernel's high-water mark of that process: VmHWM
   in /proc/PID/status, polled every 20 ms while it runs, and ru_maxrss from wait4() when it exits (the larger
   of the two is reported; they agree to a page). Wall time is measured around the process (time.perf_counter).
4. With --shards S, the same audit runs as S shards (`--shard I/S --out WORK/out_N_shards/I`), P at a time
   (--parallel, default 2), and `GEOROB merge` merges them into WORK/out_N_merged. Its row reports the wall
   time from the first shard's start to the end of the merge, the largest peak RSS of any shard or of the
   merge, and the sum of the shards' own seconds. Each finished shard leaves WORK/out_N_shards/I/rss.json (exit
   status, seconds, peak MiB); with --resume, shards that have one are not run again and their recorded figures
   count (so a long sharded run can be stopped and continued; the wall time then covers only this call). When the whole run ran too, the merged report.json is
   compared with it byte for byte apart from its `run` section (timings), as the audit promises.
5. With --merge-at M, the journal of the whole run of the last size (this run's or an earlier one's) is repeated to an M-image audit (each measure's
   full chunks reused in turn, indices moved; a whole-set unit's rows repeated) in WORK/repeated_M, and
   `GEOROB merge` assembles it into WORK/repeated_M_merged: the memory and time of assembling an M-image
   report without running M images.
6. A markdown table (images, how it ran, seconds, peak RSS MB, seconds per 1000 images) is printed and
   written to WORK/rss_audit.md. MB here means MiB (2^20 bytes).

Exit status: 1 when any run's peak RSS is >= --max-rss-mb (default 1024 MiB = 1 GiB), any audit or merge
exits non-zero, or a merged report differs from the whole run's; 0 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "onnx_models" / "digits"

SUITE = """# written by scripts/rss_audit.py: {what} on {n} repeated digits images
seed = 0
data = "{x}"
labels = "{y}"
bounds = [0.0, 1.0]

[[models]]
name = "digits_cnn"
path = "{model}"
"""

CHEAP = """
[[measures]]
name = "accuracy"

[[measures]]
name = "deepfool"

[[measures]]
name = "grid"
params = { angles = 5, shifts = 3, k = 2 }
"""


def build_set(n: int, work: Path) -> tuple[Path, Path]:
    x = np.load(DIGITS / "test_x.npy")
    y = np.load(DIGITS / "test_y.npy")
    idx = np.arange(n) % len(x)
    xp, yp = work / f"digits_{n}_x.npy", work / f"digits_{n}_y.npy"
    np.save(xp, np.ascontiguousarray(x[idx], dtype=np.float32))
    np.save(yp, y[idx].astype(np.int64))
    return xp, yp


def vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_child(cmd: list[str]) -> tuple[int, float, float]:
    """Runs `cmd`; returns (exit status, seconds, peak RSS MiB: max of VmHWM polling and wait4)."""
    return wait_child(start_child(cmd))


def start_child(cmd: list[str]) -> tuple[subprocess.Popen, float]:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), time.perf_counter()


def poll_child(child: tuple[subprocess.Popen, float], hwm: int) -> tuple[bool, int, float, float]:
    """One look at a running child: (finished, VmHWM KiB so far, seconds, peak MiB when finished)."""
    p, t0 = child
    hwm = max(hwm, vm_hwm_kib(p.pid))
    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
    if pid != p.pid:
        return False, hwm, 0.0, 0.0
    p.returncode = os.waitstatus_to_exitcode(status)
    output = p.stdout.read().decode(errors="replace") if p.stdout else ""
    if output.strip():
        print("\n".join("    " + l for l in output.strip().splitlines()[-15:]))
    # Linux: ru_maxrss in KiB.
    return True, hwm, time.perf_counter() - t0, max(hwm, ru.ru_maxrss) / 1024


def wait_child(child: tuple[subprocess.Popen, float]) -> tuple[int, float, float]:
    hwm = 0
    while True:
        done, hwm, secs, peak = poll_child(child, hwm)
        if done:
            return child[0].returncode, secs, peak
        time.sleep(0.02)


def audit_cmd(georob: Path, suite: Path, out: Path, a: argparse.Namespace) -> list[str]:
    cmd = [str(georob), "audit", str(suite), "--out", str(out), "--backend", "tract", "--quiet"]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    if a.chunk:
        cmd += ["--chunk", str(a.chunk)]
    return cmd


def run_shards(georob: Path, suite: Path, n: int, a: argparse.Namespace) -> tuple[int, float, float, float]:
    """Runs the audit as a.shards shards, a.parallel at a time, then merges them.

    Returns (worst exit status, wall seconds, largest peak RSS MiB, sum of the shards' seconds)."""
    base = a.work / f"out_{n}_shards"
    t0 = time.perf_counter()
    queue = list(range(1, a.shards + 1))
    worst, peak, busy = 0, 0.0, 0.0
    running: list[tuple[tuple[subprocess.Popen, float], list[int], int]] = []
    while queue or running:
        while queue and len(running) < a.parallel:
            i = queue.pop(0)
            record = base / str(i) / "rss.json"
            if a.resume and record.is_file():
                r = json.loads(record.read_text())
                print(f"shard {i}/{a.shards}: done earlier ({r['seconds']:.0f} s, {r['peak_mb']:.0f} MB)")
                worst, peak, busy = max(worst, abs(r["rc"])), max(peak, r["peak_mb"]), busy + r["seconds"]
                continue
            cmd = audit_cmd(georob, suite, base / str(i), a) + ["--shard", f"{i}/{a.shards}"]
            if a.resume and (base / str(i) / "journal.jsonl").is_file():
                cmd.append("--resume")  # a shard stopped part-way: georob continues its journal
            running.append((start_child(cmd), [0], i))
        for entry in list(running):
            child, hwm, i = entry
            done, hwm[0], secs, shard_peak = poll_child(child, hwm[0])
            if done:
                running.remove(entry)
                rc = child[0].returncode
                if rc == 0:
                    (base / str(i) / "rss.json").write_text(
                        json.dumps({"rc": rc, "seconds": secs, "peak_mb": shard_peak}) + "\n")
                worst = max(worst, abs(rc))
                peak, busy = max(peak, shard_peak), busy + secs
        time.sleep(0.02)
    merged = a.work / f"out_{n}_merged"
    rc, _, merge_peak = run_child([str(georob), "merge", *[str(base / str(i)) for i in range(1, a.shards + 1)],
                                   "--out", str(merged)])
    return max(worst, abs(rc)), time.perf_counter() - t0, max(peak, merge_peak), busy


def repeat_journal(src: Path, images: int, dst: Path) -> None:
    """Writes to dst/journal.jsonl the audit of src/journal.jsonl repeated to `images` images."""
    lines = (src / "journal.jsonl").read_text().splitlines()
    head = json.loads(lines[0])
    suite = head["header"]["suite"]
    chunk = suite["chunk"]
    head["header"]["data"]["images"] = images
    by_measure: dict[str, list] = {}
    for line in lines[1:]:
        u = json.loads(line)["unit"]
        by_measure.setdefault(u["measure"], []).append(u)
    dst.mkdir(parents=True, exist_ok=True)
    number = 0
    with open(dst / "journal.jsonl", "w") as out:
        out.write(json.dumps(head) + "\n")
        for m in suite["measures"]:
            units = sorted(by_measure[m.get("id") or m["name"]], key=lambda u: u["images"]["start"])
            if len(units) == 1 and units[0]["images"]["end"] - units[0]["images"]["start"] != chunk:
                ranges, sources = [(0, images)], [units[0]]  # a whole-set unit
            else:
                full = [u for u in units if u["images"]["end"] - u["images"]["start"] == chunk]
                ranges = [(s, min(images, s + chunk)) for s in range(0, images, chunk)]
                sources = [full[c % len(full)] for c in range(len(ranges))]
            for (start, end), u in zip(ranges, sources):
                u = json.loads(json.dumps(u))
                rows = u["result"]["images"]
                rows = [dict(rows[i % len(rows)], index=start + i) for i in range(end - start)]
                u["result"]["images"], u["unit"], u["images"] = rows, number, {"start": start, "end": end}
                out.write(json.dumps({"unit": u}) + "\n")
                number += 1


def stable_text(out: Path) -> str:
    """report.json without its `run` section, as written (the test suite's comparison)."""
    text = (out / "report.json").read_text()
    start = text.index('\n  "run": {')
    end = start + text[start:].index("\n  }") + len("\n  }")
    return text[:start] + text[end:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--georob", type=Path, default=Path("target/release/georob"))
    ap.add_argument("--sizes", default="1000,10000", help="comma-separated image counts")
    ap.add_argument("--work", type=Path, default=Path("/tmp/georob-rss"), help="data, suites and reports")
    ap.add_argument("--threads", type=int, help="--threads for georob (default: georob's, all cores)")
    ap.add_argument("--max-rss-mb", type=float, default=1024.0, help="fail at or above this peak RSS (MiB)")
    ap.add_argument("--measures", choices=["cheap", "default"], default="cheap",
                    help="accuracy + deepfool + grid (cheap), or georob's default suite")
    ap.add_argument("--chunk", type=int, help="--chunk for georob audit (default: the suite's, 256)")
    ap.add_argument("--shards", type=int, default=0, help="also run the audit as this many shards and merge")
    ap.add_argument("--parallel", type=int, default=2, help="shards run at once")
    ap.add_argument("--resume", action="store_true", help="with --shards: skip shards finished by an earlier call")
    ap.add_argument("--no-whole", action="store_true", help="skip the unsplit run")
    ap.add_argument("--merge-at", type=int, help="also merge the last whole run's journal repeated to this many images")
    a = ap.parse_args()

    georob = a.georob if a.georob.is_absolute() else REPO / a.georob
    if not georob.is_file():
        print(f"error: no georob binary at {georob}", file=sys.stderr)
        return 2
    a.work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    what = ("measures accuracy + deepfool + grid(angles=5, shifts=3, k=2)" if a.measures == "cheap"
            else "the default suite")

    rows, failed, whole_peaks = [], [], []
    for n in sizes:
        xp, yp = build_set(n, a.work)
        suite = a.work / f"suite_{n}.toml"
        text = SUITE.format(what=what, n=n, x=xp, y=yp, model=DIGITS / "digits_cnn.onnx")
        suite.write_text(text + (CHEAP if a.measures == "cheap" else ""))
        if not a.no_whole:
            rc, secs, peak = run_child(audit_cmd(georob, suite, a.work / f"out_{n}", a))
            rows.append((n, "whole", secs, peak, rc, ""))
            whole_peaks.append((n, peak))
            if rc != 0:
                failed.append(f"{n} images: georob audit exited with {rc}")
            if peak >= a.max_rss_mb:
                failed.append(f"{n} images: peak RSS {peak:.0f} MB >= {a.max_rss_mb:.0f} MB")
        if a.shards:
            rc, secs, peak, busy = run_shards(georob, suite, n, a)
            same = ""
            if rc != 0:
                failed.append(f"{n} images: a shard or the merge exited with {rc}")
            elif not a.no_whole:
                equal = stable_text(a.work / f"out_{n}_merged") == stable_text(a.work / f"out_{n}")
                same = "merged = whole" if equal else "merged != whole"
                if not equal:
                    failed.append(f"{n} images: the merged report.json differs from the whole run's")
            how = f"{a.shards} shards, {a.parallel} at a time, + merge (shards' own {busy:.0f} s)"
            rows.append((n, how, secs, peak, rc, same))
            if peak >= a.max_rss_mb:
                failed.append(f"{n} images: sharded peak RSS {peak:.0f} MB >= {a.max_rss_mb:.0f} MB")

    source = a.work / f"out_{sizes[-1]}"
    if a.merge_at and not (source / "journal.jsonl").is_file():
        failed.append(f"--merge-at: no whole run in {source}")
    elif a.merge_at:
        repeated = a.work / f"repeated_{a.merge_at}"
        repeat_journal(source, a.merge_at, repeated)
        rc, secs, peak = run_child([str(georob), "merge", str(repeated), "--out", str(repeated) + "_merged"])
        rows.append((a.merge_at, f"merge of {source.name}'s journal repeated", secs, peak, rc, ""))
        if rc != 0:
            failed.append(f"merge of the repeated journal exited with {rc}")
        if peak >= a.max_rss_mb:
            failed.append(f"{a.merge_at} images: merge peak RSS {peak:.0f} MB >= {a.max_rss_mb:.0f} MB")

    lines = [
        f"georob audit, digits_cnn, {what}, backend tract"
        f"{f', --threads {a.threads}' if a.threads else ''}{f', --chunk {a.chunk}' if a.chunk else ''}; "
        f"binary {a.georob}; {platform.machine()}, {os.cpu_count()} CPUs",
        "",
        "| images | how | seconds | peak RSS MB | seconds per 1000 images | |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for n, how, secs, peak, rc, same in rows:
        lines.append(f"| {n:,} | {how} | {secs:.1f} | {peak:.0f} | {secs / n * 1000:.1f} | {same}"
                     + ("" if rc == 0 else f" exit {rc}") + " |")
    lines += ["", "(peak RSS = max of VmHWM polling and wait4 ru_maxrss, of the largest process; MB = MiB)"]
    if len(whole_peaks) >= 2:
        (n0, p0), (n1, p1) = whole_peaks[0], whole_peaks[-1]
        lines.append(f"RSS growth {n0:,} -> {n1:,} images (whole runs): {p1 - p0:+.1f} MB "
                     f"({(p1 - p0) / max(n1 - n0, 1) * 1000:+.2f} MB per 1000 images)")
    text = "\n".join(lines)
    print()
    print(text)
    (a.work / "rss_audit.md").write_text(text + "\n")
    for f in failed:
        print(f"FAIL: {f}")
    print("rss_audit: " + ("OK" if not failed else "FAIL"))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Peak memory (RSS) and wall time of `georob audit` on a large digits set: does memory stay flat?

    /work/venv-models/bin/python scripts/rss_audit.py [--georob target/release/georob] \\
        [--sizes 1000,10000] [--work /tmp/georob-rss] [--threads N] [--max-rss-mb 1024]

Run from anywhere; relative paths are taken from the repository root (the folder above scripts/).

1. For each size N (default 1,000 and 10,000) an N-image digits set is built by repeating the 450-image test
   split onnx_models/digits/test_x.npy / test_y.npy (row i = test row i mod 450) and written to
   WORK/digits_N_x.npy / digits_N_y.npy (float32 (N,1,28,28), int64 (N,)); nothing is written to the repo.
2. A suite of cheap per-image measures is written to WORK/suite_N.toml: data/labels as above, bounds [0,1],
   seed 0, model onnx_models/digits/digits_cnn.onnx, measures `accuracy`, `deepfool` (defaults) and `grid`
   with params {angles = 5, shifts = 3, k = 2}.
3. `GEOROB audit WORK/suite_N.toml --out WORK/out_N --backend tract --quiet [--threads N]` is run as a child
   process. Its peak RSS is the kernel's high-water mark of that process: VmHWM in /proc/PID/status, polled
   every 20 ms while it runs, and ru_maxrss from wait4() when it exits (the larger of the two is reported;
   they agree to a page). Wall time is measured around the process (time.perf_counter).
4. A markdown table (images, seconds, peak RSS MB, seconds per 1000 images) is printed and written to
   WORK/rss_audit.md. MB here means MiB (2^20 bytes).

Exit status: 1 when any run's peak RSS is >= --max-rss-mb (default 1024 MiB = 1 GiB) or any audit exits
non-zero; 0 otherwise.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "onnx_models" / "digits"

SUITE = """# written by scripts/rss_audit.py: cheap per-image measures on {n} repeated digits images
seed = 0
data = "{x}"
labels = "{y}"
bounds = [0.0, 1.0]

[[models]]
name = "digits_cnn"
path = "{model}"

[[measures]]
name = "accuracy"

[[measures]]
name = "deepfool"

[[measures]]
name = "grid"
params = {{ angles = 5, shifts = 3, k = 2 }}
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


def run_audit(georob: Path, suite: Path, out: Path, threads: int | None) -> tuple[int, float, float, float]:
    """Returns (exit status, seconds, peak RSS MiB from VmHWM polling, peak RSS MiB from wait4)."""
    cmd = [str(georob), "audit", str(suite), "--out", str(out), "--backend", "tract", "--quiet"]
    if threads:
        cmd += ["--threads", str(threads)]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    hwm = 0
    while True:
        hwm = max(hwm, vm_hwm_kib(p.pid))
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        time.sleep(0.02)
    secs = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    output = p.stdout.read().decode(errors="replace") if p.stdout else ""
    if output.strip():
        print("\n".join("    " + l for l in output.strip().splitlines()[-15:]))
    return p.returncode, secs, hwm / 1024, ru.ru_maxrss / 1024  # Linux: ru_maxrss in KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--georob", type=Path, default=Path("target/release/georob"))
    ap.add_argument("--sizes", default="1000,10000", help="comma-separated image counts")
    ap.add_argument("--work", type=Path, default=Path("/tmp/georob-rss"), help="data, suites and reports")
    ap.add_argument("--threads", type=int, help="--threads for georob (default: georob's, all cores)")
    ap.add_argument("--max-rss-mb", type=float, default=1024.0, help="fail at or above this peak RSS (MiB)")
    a = ap.parse_args()

    georob = a.georob if a.georob.is_absolute() else REPO / a.georob
    if not georob.is_file():
        print(f"error: no georob binary at {georob}", file=sys.stderr)
        return 2
    a.work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]

    rows, failed = [], []
    for n in sizes:
        xp, yp = build_set(n, a.work)
        suite = a.work / f"suite_{n}.toml"
        suite.write_text(SUITE.format(n=n, x=xp, y=yp, model=DIGITS / "digits_cnn.onnx"))
        rc, secs, hwm, maxrss = run_audit(georob, suite, a.work / f"out_{n}", a.threads)
        peak = max(hwm, maxrss)
        rows.append((n, secs, peak, secs / n * 1000, rc, hwm, maxrss))
        if rc != 0:
            failed.append(f"{n} images: georob audit exited with {rc}")
        if peak >= a.max_rss_mb:
            failed.append(f"{n} images: peak RSS {peak:.0f} MB >= {a.max_rss_mb:.0f} MB")

    lines = [
        f"georob audit, digits_cnn, measures accuracy + deepfool + grid(angles=5, shifts=3, k=2), backend tract"
        f"{f', --threads {a.threads}' if a.threads else ''}; binary {a.georob}; {platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        "",
        "| images | seconds | peak RSS MB | seconds per 1000 images |",
        "|---:|---:|---:|---:|",
    ]
    for n, secs, peak, per, rc, hwm, maxrss in rows:
        lines.append(f"| {n:,} | {secs:.1f} | {peak:.0f} | {per:.1f} |" + ("" if rc == 0 else f" exit {rc}"))
    lines += ["", "(peak RSS = max of VmHWM polling and wait4 ru_maxrss; MB = MiB; "
              + ", ".join(f"{n}: VmHWM {hwm:.1f} / ru_maxrss {mx:.1f}" for n, _, _, _, _, hwm, mx in rows) + ")"]
    if len(rows) >= 2:
        (n0, _, p0, *_), (n1, _, p1, *_) = rows[0], rows[-1]
        lines.append(f"RSS growth {n0:,} -> {n1:,} images: {p1 - p0:+.1f} MB "
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

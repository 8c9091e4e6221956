#!/usr/bin/env python3
"""Runs the gradient graph that `georob export-grad` wrote for EfficientNet-Lite0 with
onnxruntime.InferenceSession, and compares it with `georob grad` on the same inputs.

    python scripts/check_export_grad.py [--georob target/debug/georob] [--m 10]

Needs numpy and onnxruntime; the georob binary must be built (cargo build). Inputs: the 5 photos
of onnx_models/efficientnet_lite0/photos_x.npy (model space), cotangents (5, M, 1000) from
numpy's default_rng(0). Passes when logits and gradients agree within 1e-4 relative L2.
Exits 0 on agreement, 1 otherwise.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "onnx_models/efficientnet_lite0/efficientnet_lite0.onnx")
DATA = os.path.join(ROOT, "onnx_models/efficientnet_lite0/photos_x.npy")


def rel(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--georob", default=os.path.join(ROOT, "target/debug/georob"))
    p.add_argument("--m", type=int, default=10, help="cotangents per image")
    p.add_argument("--backend", default="ort", help="backend of `georob grad`")
    a = p.parse_args()
    x = np.load(DATA).astype(np.float32)
    n, m = x.shape[0], a.m
    cot = np.random.default_rng(0).standard_normal((n, m, 1000)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        graph = os.path.join(d, "efficientnet_lite0.grad.onnx")
        xp, cp, gp, lp = (os.path.join(d, f) for f in ("x.npy", "c.npy", "g.npy", "l.npy"))
        np.save(xp, x)
        np.save(cp, cot)
        run = lambda args: subprocess.run([a.georob, *args], check=True, capture_output=True, text=True)
        out = run(["export-grad", MODEL, "--out", graph, "--batch", str(n), "--classes", str(m)])
        print(out.stdout, end="")
        out = run(["grad", MODEL, "--input", xp, "--cotangent", cp, "--out", gp, "--logits", lp,
                   "--backend", a.backend])
        print(out.stderr, end="")
        g_georob, l_georob = np.load(gp), np.load(lp)
        sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        print("onnxruntime", ort.__version__, "inputs",
              [(i.name, i.shape) for i in sess.get_inputs()], "outputs",
              [(o.name, o.shape) for o in sess.get_outputs()])
        logits, grad = sess.run(["logits", "grad"], {"input": x, "cotangent": cot})
    rl, rg = rel(logits, l_georob), rel(grad, g_georob)
    ok = rl <= 1e-4 and rg <= 1e-4
    print(f"N={n} M={m}: logits rel {rl:.2e}, grad rel {rg:.2e} (georob grad on {a.backend}, "
          f"exported graph on onnxruntime {ort.__version__}): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

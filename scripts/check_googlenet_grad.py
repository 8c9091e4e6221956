#!/usr/bin/env python3
"""Full-size Inception-v1 (torchvision GoogLeNet) gradients of `georob grad` on tract and ONNX
Runtime against PyTorch float64 autograd, beside each sample's smallest MaxPool near-tie gap.

    .venv/bin/python scripts/check_googlenet_grad.py [--georob target/release/georob] [--seeds 5]

For each seed: googlenet(num_classes=10, aux_logits=False, init_weights=True) with random weights,
exported at opset 17 with a dynamic batch; 2 inputs of 3x64x64 uniform in [0,1); 10 cotangents
N(0,1) per input. Prints per sample the relative L2 error of each backend's gradient (and of
PyTorch's own float32 autograd) and the
smallest relative gap between the two largest distinct values of any MaxPool window (float64,
`max_pool_gap` of onnx_models/make_grad_models.py). A gap below the float32 forward's error
(about 1e-6) lets a backend's rounding pick the other arg-max: that window's gradient then goes to
another element, a valid one-sided gradient of the function that backend computes, but not
PyTorch's. Needs torch, torchvision, onnx and onnxruntime; ORT_DYLIB_PATH or the onnxruntime
package gives georob its ONNX Runtime library. Exit status 0.
"""
import argparse
import copy
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "onnx_models"))
from make_grad_models import max_pool_gap  # noqa: E402


def georob_grad(georob, model, x, cot, backend, d):
    out = d / f"g_{backend}.npy"
    subprocess.run([str(georob), "grad", str(model), "--input", str(x), "--cotangent", str(cot), "--out", str(out),
                    "--backend", backend, "--no-sidecar"], check=True, capture_output=True)
    return np.load(out).astype(np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--georob", type=Path, default=ROOT / "target/release/georob")
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args()
    print("| seed | sample | tract rel | ort rel | torch float32 rel | smallest MaxPool gap |")
    print("|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for seed in range(a.seeds):
            torch.manual_seed(seed)
            m = torchvision.models.googlenet(num_classes=10, aux_logits=False, init_weights=True).eval()
            g = torch.Generator().manual_seed(1000 + seed)
            x = torch.rand(2, 3, 64, 64, generator=g)
            cot = torch.randn(2, 10, 10, generator=g)
            torch.onnx.export(m, (x[:1],), str(d / "googlenet.onnx"), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
            np.save(d / "x.npy", x.numpy())
            np.save(d / "cot.npy", cot.numpy())
            m64, x64 = copy.deepcopy(m).double(), x.double().requires_grad_(True)
            out = m64(x64)
            ref = torch.stack([torch.autograd.grad(out, x64, grad_outputs=cot[:, j].double(), retain_graph=True)[0]
                               for j in range(10)], 1).numpy()
            x32 = x.clone().requires_grad_(True)
            out32 = m(x32)
            f32 = torch.stack([torch.autograd.grad(out32, x32, grad_outputs=cot[:, j], retain_graph=True)[0]
                               for j in range(10)], 1).double().numpy()
            got = {b: georob_grad(a.georob, d / "googlenet.onnx", d / "x.npy", d / "cot.npy", b, d)
                   for b in ("tract", "ort")}
            got["torch"] = f32
            for i in range(2):
                rel = {b: np.linalg.norm(got[b][i] - ref[i]) / np.linalg.norm(ref[i]) for b in got}
                print(f"| {seed} | {i} | {rel['tract']:.1e} | {rel['ort']:.1e} | {rel['torch']:.1e} "
                      f"| {max_pool_gap(m, x[i:i + 1]):.1e} |", flush=True)


if __name__ == "__main__":
    main()

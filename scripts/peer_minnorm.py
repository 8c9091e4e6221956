#!/usr/bin/env python3
"""Peer comparison: georob's minimal-norm measure against Foolbox 3's minimal-norm attacks (L2, Linf).

    python3 -m venv .venv
    .venv/bin/pip install -r onnx_models/requirements.txt foolbox==3.3.4 torchattacks==3.5.1
    ORT_DYLIB_PATH=.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0 \\
    .venv/bin/python scripts/peer_minnorm.py --georob target/release/georob \\
        --threads 2 --which both --out /tmp/peer [--measure minnorm] [--strength thorough] [--l1] \\
        [--limit N] [--repeat N] [--effnet-repeat N] [--georob-timeout S]

    # the Foolbox side alone (no --georob):
    .venv/bin/python scripts/peer_minnorm.py --threads 2 --which both --out /tmp/peer

For each model (digits CNN on the 450-image digits test split; EfficientNet-Lite0 on the 5 bundled photos):

1. Foolbox side. The PyTorch models are those of peer_foolbox.py (imported from it, not copied): digits
   `DigitsCNN` of onnx_models/make_models.py with the weights read from the ONNX initializers, EfficientNet-
   Lite0 `load_effnet()`; their logits are checked against onnxruntime before anything is attacked (digits
   1e-4, EfficientNet 1e-3 abs; a mismatch aborts). Foolbox attacks in [0,1] image space with bounds (0,1);
   EfficientNet's normalisation (u - 0.498) / 0.502 is Foolbox's `preprocessing`, and its [0,1] images are
   photos_x.npy mapped back, u = 0.502 x + 0.498 (clipped to [0,1]; within ~1e-7 of the PIL pixels that
   peer_foolbox.py decodes from the JPEGs), i.e. exactly the pixels georob is given. Only correctly
   classified images are attacked, all in one batch per model and attack, with `epsilons=None` (minimal-norm
   mode), frozen parameters and `torch.set_num_threads(--threads)`:
   - L2:   `L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)`, `DDNAttack(steps=100)`,
           `L2FMNAttack(steps=100)`;
   - Linf: `LinfDeepFoolAttack(steps=50, candidates=10, overshoot=0.02)`, `LInfFMNAttack(steps=100)`;
   - L1 (with --l1): `L1FMNAttack(steps=100)`.
   Other parameters are Foolbox's defaults. The attack call alone is timed (time.perf_counter), after an
   untimed warm-up (a 2-step DeepFool on 2 images). Per image, the norm is ||x_adv - x|| in [0,1] image
   space in the attack's norm, recorded only where x_adv is really misclassified: a forward pass re-checks
   every returned x_adv (Foolbox's own success flag is compared with it, "recheck agrees"); a failure is
   null.
2. georob side (with --georob): for each norm, `georob measure <--measure> MODEL DATA --labels Y --bounds
   LO,HI -p norm=l2|linf[|l1] [-p strength=<--strength>] --backend ort|tract --threads N --json F -q`
   (`-p strength` only with --measure minnorm, the default; --measure deepfool gets `-p norm` alone);
   backend ort when ORT_DYLIB_PATH is set, else tract. Data: digits test_x.npy/test_y.npy with --bounds 0,1;
   EfficientNet photos_x.npy/photos_y.npy (normalised model space) with the [0,1] box mapped to model space,
   --bounds=-0.99203187...,1.00398406..., and georob's norms multiplied by 0.502 back to image space (as in
   peer_foolbox.py; the normalisation has one std for all channels, so this holds for every norm). Per image
   its `norm_<norm>` (or `norm`) where the outcome is 'fooled', else null; 'misclassified' images are not
   attacked. georob's own `timings.seconds` is its time (the measure, its gradient graphs and sessions
   included; loading the model outside it); the wall time of the process is reported too. A georob command
   that fails (e.g. a measure this binary does not have) is logged with its stderr and the report is the
   Foolbox side alone.
3. Comparison, per model and norm, over the images attacked by all: ratio = georob norm / min(norms of the
   Foolbox attacks of that norm that succeeded on it); reported: the median ratio, the fraction with ratio
   <= 1 (and <= 1.01), georob's median norm over each Foolbox attack's median norm (the DeepFool one is what
   a `--measure deepfool` run is judged by), the paired median of georob / that attack per image, success
   counts, seconds, images/s, and georob's images/s over Foolbox DDN's (L2) / FMN's (Linf, L1).
4. OUT/peer_minnorm.md (also printed) and OUT/peer_minnorm.json (machine and versions: python, torch,
   foolbox, eagerpy, onnxruntime, numpy, CPU model from /proc/cpuinfo; every row with its per-image norms
   keyed by image index, for every peer and georob); OUT/georob_<model>_<measure>_<norm>.json are the raw
   georob outputs.

Images/s = images attacked / seconds. Success = fooled (re-checked) / attacked. Median norm = median over
the successful images. With --repeat N every attack and georob run is repeated N times, interleaved
(peer_foolbox.interleaved), and the run with the median time is reported (all times are listed);
--effnet-repeat sets it for EfficientNet alone. Each georob row records the binary's mtime when it ran
(others may rebuild it during a run; the raw JSON left in OUT is the last run's).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_foolbox as pf  # noqa: E402

ROOT, DIGITS, EFF = pf.ROOT, pf.DIGITS, pf.EFF
EFF_MEAN, EFF_STD = pf.EFF_MEAN, pf.EFF_STD
log, fmt = pf.log, pf.fmt

NORM_NAME = {"l2": "L2", "linf": "Linf", "l1": "L1"}


def nfmt(v) -> str:
    """A norm: 4 decimals, or 4 significant digits below 0.01 (EfficientNet's Linf norms are ~1e-4)."""
    if v is not None and np.isfinite(v) and abs(v) < 0.01:
        return fmt(v, ".4g")
    return fmt(v, ".4f")


def attacks_for(norm: str) -> list[tuple[str, str]]:
    """(short name, Foolbox constructor call as text) of the Foolbox attacks of `norm`."""
    return {
        "l2": [("DeepFool", "L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)"),
               ("DDN", "DDNAttack(steps=100)"),
               ("FMN", "L2FMNAttack(steps=100)")],
        "linf": [("DeepFool", "LinfDeepFoolAttack(steps=50, candidates=10, overshoot=0.02)"),
                 ("FMN", "LInfFMNAttack(steps=100)")],
        "l1": [("FMN", "L1FMNAttack(steps=100)")],
    }[norm]


def make_attack(ctor: str):
    import foolbox as fb

    return eval("fb.attacks." + ctor, {"fb": fb})  # the constructor text is the one printed in the report


def norms_of(delta, norm: str) -> np.ndarray:
    d = delta.flatten(1).double()
    if norm == "l2":
        v = d.norm(dim=1)
    elif norm == "linf":
        v = d.abs().max(dim=1).values
    else:
        v = d.abs().sum(dim=1)
    return v.numpy()


# --------------------------------------------------------------------------- Foolbox

def run_fb(fmodel, xa, ya, idx: np.ndarray, n_total: int, norm: str, name: str, ctor: str,
           threads: int) -> dict:
    """One Foolbox minimal-norm attack on the batch (xa, ya) (the correctly classified images, dataset
    indices `idx`); the attack call alone is timed; success is re-checked by a forward pass."""
    import torch

    torch.set_num_threads(threads)
    attack = make_attack(ctor)
    secs, adv, success, adv_pred = pf.attack_timed(fmodel, attack, xa, ya)
    succ = (adv_pred != ya).numpy()
    fb_succ = success.numpy().astype(bool)
    lo, hi = float(adv.min()), float(adv.max())
    nrm = norms_of(adv - xa, norm)
    per = {str(int(i)): (float(v) if s else None) for i, v, s in zip(idx, nrm, succ)}
    n = len(idx)
    ok = nrm[succ]
    row = {
        "tool": f"Foolbox {name}",
        "attack": name,
        "foolbox": ctor,
        "norm": norm,
        "n_total": int(n_total),
        "n_attacked": int(n),
        "n_fooled": int(succ.sum()),
        "success_rate": float(succ.mean()) if n else float("nan"),
        "median_norm": float(np.median(ok)) if len(ok) else float("nan"),
        "mean_norm": float(np.mean(ok)) if len(ok) else float("nan"),
        "seconds": secs,
        "wall_seconds": secs,
        "images_per_s": n / secs if secs > 0 else float("nan"),
        "success_recheck_agrees": bool(np.array_equal(fb_succ, succ)),
        "n_foolbox_success": int(fb_succ.sum()),
        "adv_range": [lo, hi],
        "per_image": per,
    }
    log(f"  {row['tool']} ({NORM_NAME[norm]}): {row['n_fooled']}/{n} fooled, median {NORM_NAME[norm]} "
        f"{nfmt(row['median_norm'])}, {secs:.2f} s, {fmt(row['images_per_s'], '.2f')} img/s"
        + ("" if row["success_recheck_agrees"] else
           f" (Foolbox's success flag says {row['n_foolbox_success']}: disagrees with the re-check)"))
    if lo < -1e-6 or hi > 1 + 1e-6:
        log(f"  WARNING: {row['tool']} x_adv outside [0,1]: [{lo}, {hi}]")
    return row


# --------------------------------------------------------------------------- georob

def run_georob_minnorm(args, data: list, out_json: Path, norm: str, n_total: int, scale: float) -> dict | None:
    """georob `measure <args.measure>` with `-p norm=<norm>`; per-image norms (x `scale` into image space)
    keyed by image index, null where not fooled; misclassified images are left out."""
    if not args.georob:
        return None
    backend = "ort" if os.environ.get("ORT_DYLIB_PATH") else "tract"
    tool = f"georob {args.measure} ({backend})"
    if not (os.path.isfile(args.georob) and os.access(args.georob, os.X_OK)):
        log(f"  {tool}: skipped ({args.georob} is missing or not executable)")
        return {"tool": tool, "norm": norm, "skipped": f"{args.georob} missing"}
    cmd = [args.georob, "measure", args.measure, *data, "-p", f"norm={norm}"]
    if args.measure == "minnorm":
        cmd += ["-p", f"strength={args.strength}"]
    cmd += ["--backend", backend, "--threads", str(args.threads), "--json", str(out_json), "-q"]
    if args.limit is not None:
        cmd += ["--limit", str(args.limit)]
    try:
        mtime = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(args.georob)))
    except OSError:
        mtime = None
    j, wall = pf.run_georob_json(tool, cmd, out_json, args.georob_timeout)
    if "skipped" in j:
        j["norm"] = norm
        if j.get("stderr"):
            print(j["stderr"], file=sys.stderr, flush=True)
        return j
    summ = pf.get_path(j, "summary", default={}) or {}
    images = pf.get_path(j, "images", default=[]) or []
    secs = pf.as_float(pf.get_path(j, "timings.seconds", "seconds"))
    per, outcomes = {}, {}
    for k, im in enumerate(images):
        outcome, succ, vals = pf.image_outcome(im)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "misclassified":
            continue
        i = im.get("index", k)
        v = None
        if outcome == "fooled":
            for src in (im, vals):
                for key in (f"norm_{norm}", "norm"):
                    if v is None and pf.as_float(src.get(key)) is not None:
                        v = pf.as_float(src[key]) * scale
        per[str(int(i))] = v
    n = len(per)
    ok = np.array([v for v in per.values() if v is not None], dtype=np.float64)
    secs = secs if secs is not None else float("nan")
    row = {
        "tool": tool,
        "attack": "georob",
        "norm": norm,
        "command": cmd,
        "binary_mtime": mtime,
        "scale": scale,
        "backend_detail": pf.get_path(j, "backend", default=backend),
        "gradient": j.get("gradient"),
        "params": j.get("params"),
        "summary": summ,
        "outcomes": outcomes,
        "n_total": int(pf.as_float(summ.get("n")) or n_total),
        "n_attacked": n,
        "n_fooled": int(len(ok)),
        "success_rate": len(ok) / n if n else float("nan"),
        "median_norm": float(np.median(ok)) if len(ok) else float("nan"),
        "mean_norm": float(np.mean(ok)) if len(ok) else float("nan"),
        "seconds": secs,
        "wall_seconds": wall,
        "images_per_s": n / secs if secs and secs > 0 else float("nan"),
        "images_per_s_wall": n / wall if wall > 0 else float("nan"),
        "per_image": per,
    }
    if (n_att := pf.as_float(summ.get("n_attacked"))) is not None and int(n_att) != n:
        log(f"  {tool}: summary n_attacked {n_att} != {n} non-misclassified images in `images`")
    log(f"  {tool} ({NORM_NAME[norm]}): {row['n_fooled']}/{n} fooled, median {NORM_NAME[norm]} "
        f"{nfmt(row['median_norm'])}, {fmt(secs, '.2f')} s (wall {wall:.2f} s), "
        f"{fmt(row['images_per_s'], '.2f')} img/s")
    return row


# --------------------------------------------------------------------------- comparison

def compare_norm(rows: list, norm: str) -> dict:
    """georob against the Foolbox attacks of `norm` (see the module docstring, 3.)."""
    fbs = [r for r in rows if r.get("norm") == norm and r.get("attack") != "georob" and not r.get("skipped")]
    gr = next((r for r in rows if r.get("norm") == norm and r.get("attack") == "georob"
               and not r.get("skipped")), None)
    out = {"norm": norm}
    if not fbs or gr is None:
        return out
    common = sorted(set.intersection(*(set(r["per_image"]) for r in fbs + [gr])), key=int)
    ratios, g_only, fb_only, both_fail = {}, [], [], []
    for i in common:
        fb_ok = [r["per_image"][i] for r in fbs if r["per_image"][i] is not None]
        g = gr["per_image"][i]
        if g is not None and fb_ok:
            ratios[i] = g / min(fb_ok) if min(fb_ok) > 0 else float("inf")
        elif g is not None:
            g_only.append(int(i))
        elif fb_ok:
            fb_only.append(int(i))
        else:
            both_fail.append(int(i))
    rv = np.array(list(ratios.values()), dtype=np.float64)
    out.update({
        "n_common": len(common),
        "n_ratio": int(len(rv)),
        "median_ratio_vs_best": float(np.median(rv)) if len(rv) else float("nan"),
        "frac_ratio_le_1": float(np.mean(rv <= 1.0)) if len(rv) else float("nan"),
        "frac_ratio_le_1_01": float(np.mean(rv <= 1.01)) if len(rv) else float("nan"),
        "max_ratio": float(np.max(rv)) if len(rv) else float("nan"),
        "georob_fooled_foolbox_none": g_only,
        "foolbox_fooled_georob_not": fb_only,
        "nobody_fooled": both_fail,
        "per_image_ratio_vs_best": ratios,
        "vs_attack": {},
    })
    for r in fbs:
        paired = [gr["per_image"][i] / r["per_image"][i] for i in common
                  if gr["per_image"][i] is not None and r["per_image"][i]]
        out["vs_attack"][r["attack"]] = {
            "median_ratio": gr["median_norm"] / r["median_norm"] if r["median_norm"] else float("nan"),
            "paired_median_ratio": float(np.median(paired)) if paired else float("nan"),
            "speed_ratio": gr["images_per_s"] / r["images_per_s"] if r["images_per_s"] else float("nan"),
        }
    ref = "DDN" if norm == "l2" else "FMN"
    if ref in out["vs_attack"]:
        out["speed_ref"] = ref
        out["speed_ratio_vs_ref"] = out["vs_attack"][ref]["speed_ratio"]
    if "DeepFool" in out["vs_attack"]:
        out["median_ratio_vs_deepfool"] = out["vs_attack"]["DeepFool"]["median_ratio"]
    return out


# --------------------------------------------------------------------------- per model

def run_model(args, name: str, title: str, data_desc: str, model, x01: np.ndarray, y: np.ndarray, prep,
              check: dict, georob_data: list, scale: float, out: Path, repeat: int) -> dict:
    import foolbox as fb
    import torch

    torch.set_num_threads(args.threads)
    model.eval()
    model.requires_grad_(False)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), preprocessing=prep)
    xt, yt = torch.from_numpy(x01), torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
        pred = fmodel(xt).argmax(1)
    correct = (pred == yt).numpy()
    idx = np.nonzero(correct)[0]
    xa, ya = xt[correct].contiguous(), yt[correct].contiguous()
    log(f"  {len(idx)} of {len(y)} images correctly classified: attacked")
    # warm-up (untimed): torch's first forward/backward passes on a batch carry one-off costs
    make_attack("L2DeepFoolAttack(steps=2, candidates=10, overshoot=0.02)")(fmodel, xa[:2], ya[:2], epsilons=None)
    runners = []
    for norm in args.norms:
        for aname, ctor in attacks_for(norm):
            runners.append(lambda norm=norm, aname=aname, ctor=ctor: run_fb(
                fmodel, xa, ya, idx, len(y), norm, aname, ctor, args.threads))
        if args.georob:
            runners.append(lambda norm=norm: run_georob_minnorm(
                args, georob_data, out / f"georob_{name}_{args.measure}_{norm}.json", norm, len(y), scale))
    rows = pf.interleaved(repeat, runners)
    comps = {norm: compare_norm(rows, norm) for norm in args.norms}
    return {"model": name, "title": title, "data": data_desc, "check": check,
            "n_correct": int(len(idx)), "rows": rows, "comparison": comps}


def do_digits(args, mm, out: Path) -> dict:
    log("== digits CNN ==")
    x, y, model, check = pf.digits_checked(mm, args.threads)
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    rel = DIGITS.relative_to(ROOT)
    data = [str(rel / "digits_cnn.onnx"), str(rel / "test_x.npy"), "--labels", str(rel / "test_y.npy"),
            "--bounds", "0,1"]
    return run_model(args, "digits", "digits CNN (onnx_models/digits/digits_cnn.onnx, 28×28 gray)",
                     "onnx_models/digits/test_x.npy + test_y.npy" + (f" (first {args.limit})" if args.limit else ""),
                     model, x, y, None, check, data, 1.0, out, args.repeat)


def do_effnet(args, mm, out: Path) -> dict:
    import foolbox as fb
    import torch

    log("== EfficientNet-Lite0 ==")
    xm = np.load(EFF / "photos_x.npy").astype(np.float32)  # normalised model space (u - 0.498) / 0.502
    y = np.load(EFF / "photos_y.npy").astype(np.int64)
    u = np.clip(xm * np.float32(EFF_STD) + np.float32(EFF_MEAN), 0.0, 1.0).astype(np.float32)
    model = mm.load_effnet()
    torch.set_num_threads(args.threads)
    prep = dict(mean=[EFF_MEAN] * 3, std=[EFF_STD] * 3, axis=-3)
    fm = fb.PyTorchModel(model.eval(), bounds=(0, 1), preprocessing=prep)
    with torch.no_grad():
        tl = fm(torch.from_numpy(u)).numpy()
    check = pf.compare("efficientnet_lite0 (5 photos, foolbox preprocessing vs ort on photos_x.npy)", tl,
                       pf.ort_logits(EFF / "efficientnet_lite0.onnx", xm, args.threads), 1e-3)
    if args.limit is not None:
        u, y = u[:args.limit], y[:args.limit]
    lo, hi = (0.0 - EFF_MEAN) / EFF_STD, (1.0 - EFF_MEAN) / EFF_STD
    rel = EFF.relative_to(ROOT)
    data = [str(rel / "efficientnet_lite0.onnx"), str(rel / "photos_x.npy"), "--labels", str(rel / "photos_y.npy"),
            f"--bounds={lo!r},{hi!r}"]
    return run_model(args, "effnet",
                     "EfficientNet-Lite0 (onnx_models/efficientnet_lite0/efficientnet_lite0.onnx, 224×224 RGB, "
                     "(u-0.498)/0.502)",
                     "onnx_models/efficientnet_lite0/photos_x.npy + photos_y.npy (Foolbox: mapped back to [0,1]; "
                     "georob: model space, norms ×0.502)" + (f" (first {args.limit})" if args.limit else ""),
                     model, u, y, prep, check, data, EFF_STD, out,
                     args.effnet_repeat if args.effnet_repeat is not None else args.repeat)


# --------------------------------------------------------------------------- report

def report(results: list, mach: dict, args) -> str:
    L = ["# Minimal-norm adversarial perturbations: georob vs Foolbox 3", ""]
    L.append(f"Machine: {mach['cpu']}, {mach['cores']} cores; threads {mach['threads']} "
             f"(torch.set_num_threads / georob --threads); load average at the end "
             f"{', '.join(f'{a:.2f}' for a in mach['load_average']) if mach.get('load_average') else '?'}.")
    L.append(f"Versions: python {mach['python']}, torch {mach['torch']}, foolbox {mach['foolbox']}, "
             f"eagerpy {mach.get('eagerpy', '?')}, onnxruntime (Python) {mach['onnxruntime']}, numpy {mach['numpy']}; "
             f"georob {mach.get('georob', 'not run')}"
             + (f" ({mach['georob_binary']}, built {mach['georob_mtime']}, HEAD {mach.get('git_head', '?')})"
                if mach.get("georob_binary") else "") + ".")
    if mach.get("ORT_DYLIB_PATH"):
        L.append(f"georob ort: ORT_DYLIB_PATH={mach['ORT_DYLIB_PATH']}")
    L.append("")
    gdesc = (f"`georob measure {args.measure}` with `-p norm=…`"
             + (f" `-p strength={args.strength}`" if args.measure == "minnorm" else ""))
    L.append("Settings: correctly classified images only, one batch per model and attack, [0,1] image space "
             "(EfficientNet's normalisation as Foolbox `preprocessing`), epsilons=None, frozen params; Foolbox's "
             "time is the attack call alone, success re-checked by a forward pass. georob: "
             f"{gdesc}, its time `timings.seconds` (model loading outside it). Norms in [0,1] image space "
             "(georob's EfficientNet norms ×0.502). 'ratio' = georob norm / the smallest successful Foolbox norm "
             "of that norm on the same image.")
    L.append("")
    for res in results:
        L.append(f"## {res['title']}")
        L.append("")
        L.append(f"Data: {res['data']}; {res['n_correct']} correctly classified. torch vs onnxruntime logits: max "
                 f"abs diff {res['check']['max_abs_diff']:.1e} (max |logit| {res['check']['max_abs_logit']:.1f}).")
        L.append("")
        for norm in args.norms:
            rows = [r for r in res["rows"] if r.get("norm") == norm]
            comp = res["comparison"].get(norm, {})
            L.append(f"### {NORM_NAME[norm]}")
            L.append("")
            L.append(f"| tool | attack | fooled / attacked | median {NORM_NAME[norm]} | mean {NORM_NAME[norm]} | "
                     "seconds | images/s | georob median / this median | georob / this, paired median | "
                     "georob images/s / this |")
            L.append("|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                if r.get("skipped"):
                    L.append(f"| {r['tool']} | skipped: {r['skipped']} | | | | | | | | |")
                    continue
                va = comp.get("vs_attack", {}).get(r["attack"], {})
                what = r.get("foolbox") or " ".join(str(c) for c in r.get("command", [])[2:3])
                L.append(f"| {r['tool']} | `{what}` | {r['n_fooled']}/{r['n_attacked']} | "
                         f"{nfmt(r['median_norm'])} | {nfmt(r['mean_norm'])} | {fmt(r['seconds'], '.3f')} | "
                         f"{fmt(r['images_per_s'], '.2f')} | {fmt(va.get('median_ratio'), '.3f')} | "
                         f"{fmt(va.get('paired_median_ratio'), '.3f')} | {fmt(va.get('speed_ratio'), '.2f')} |")
            L.append("")
            built = [f"{r['tool']} ran the binary built {r['binary_mtime']}" for r in rows if r.get("binary_mtime")]
            if built:
                L.append("; ".join(built) + ".")
                L.append("")
            bad = [r["tool"] for r in rows if r.get("success_recheck_agrees") is False]
            if bad:
                L.append(f"Foolbox's own success flag disagrees with the re-check for: {', '.join(bad)}.")
                L.append("")
            if comp.get("n_ratio"):
                L.append(f"georob vs the best Foolbox attack per image ({comp['n_ratio']} of {comp['n_common']} "
                         f"images attacked by all where both sides succeeded): median ratio "
                         f"{comp['median_ratio_vs_best']:.4f}, ratio ≤ 1 on {comp['frac_ratio_le_1']:.1%} "
                         f"(≤ 1.01 on {comp['frac_ratio_le_1_01']:.1%}), max {comp['max_ratio']:.3f}; georob median / "
                         f"Foolbox DeepFool median {fmt(comp.get('median_ratio_vs_deepfool'), '.4f')}; georob images/s / "
                         f"Foolbox {comp.get('speed_ref', '?')} images/s {fmt(comp.get('speed_ratio_vs_ref'), '.2f')}. "
                         f"Fooled by georob only: {len(comp['georob_fooled_foolbox_none'])}; by Foolbox only: "
                         f"{len(comp['foolbox_fooled_georob_not'])}; by nobody: {len(comp['nobody_fooled'])}.")
                L.append("")
            multi = [r for r in rows if len(r.get("seconds_runs", [])) > 1]
            if multi:
                L.append(f"Median-time run of {len(multi[0]['seconds_runs'])} interleaved rounds; every run's seconds: "
                         + "; ".join(f"{r['tool']}: {', '.join(fmt(t, '.3f') for t in r['seconds_runs'])}"
                                     for r in multi))
                L.append("")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--georob", default=None, help="the georob binary (omit to run the Foolbox side only)")
    ap.add_argument("--measure", default="minnorm", help="georob measure (minnorm, or deepfool)")
    ap.add_argument("--strength", default="thorough", help="georob -p strength=… (only with --measure minnorm)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/peer")
    ap.add_argument("--which", choices=["digits", "effnet", "both"], default="both")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (before dropping "
                                                                  "misclassified ones; passed to georob as --limit)")
    ap.add_argument("--l1", action="store_true", help="also L1: Foolbox L1FMNAttack(steps=100), georob -p norm=l1")
    ap.add_argument("--georob-timeout", type=float, default=None,
                    help="give up on a georob run after this many seconds (row marked skipped)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every attack and georob this many times, interleaved, and report each one's "
                         "median-time run")
    ap.add_argument("--effnet-repeat", type=int, default=None,
                    help="--repeat for EfficientNet alone (default: --repeat); its Foolbox attacks take minutes each "
                         "on 2 cores")
    args = ap.parse_args()
    if args.repeat < 1 or (args.effnet_repeat is not None and args.effnet_repeat < 1):
        ap.error("--repeat and --effnet-repeat must be at least 1")
    args.norms = ["l2", "linf"] + (["l1"] if args.l1 else [])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mm = pf.make_models_module(args.threads)
    results = []
    if args.which in ("digits", "both"):
        results.append(do_digits(args, mm, out))
    if args.which in ("effnet", "both"):
        results.append(do_effnet(args, mm, out))
    mach = pf.machine(args)
    mach["georob_measure"] = args.measure if args.georob else None
    md = report(results, mach, args)
    pf.write_report(out, "peer_minnorm", md, mach, results)


if __name__ == "__main__":
    main()

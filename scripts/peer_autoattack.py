#!/usr/bin/env python3
"""Peer comparison: georob's robust accuracy (Linf) against torchattacks' standard AutoAttack on the digits CNN.

    python3 -m venv .venv
    .venv/bin/pip install -r onnx_models/requirements.txt foolbox==3.3.4 torchattacks==3.5.1
    ORT_DYLIB_PATH=.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0 \\
    .venv/bin/python scripts/peer_autoattack.py --georob target/release/georob \\
        --threads 2 --eps 0.05,0.1 --out /tmp/peer [--measure robust_accuracy|minnorm] [--strength thorough] \\
        [--limit N] [--georob-timeout S]

    # the AutoAttack side alone (no --georob):
    .venv/bin/python scripts/peer_autoattack.py --threads 2 --eps 0.05,0.1 --out /tmp/peer

(torchattacks 3.5.1 pins requests~=2.25.1 and downgrades it in the venv; nothing here uses requests.)

1. AutoAttack side. The digits CNN is rebuilt in PyTorch as in peer_foolbox.py (imported from it: `DigitsCNN`
   of onnx_models/make_models.py with the weights read from the ONNX initializers) and its logits are checked
   against onnxruntime on all 450 test images (1e-4 abs; a mismatch aborts). The model takes [0,1] pixels
   and returns logits, which is what torchattacks expects; it is wrapped in a module that only forwards, in
   eval mode with frozen parameters, `torch.set_num_threads(--threads)`. For each eps of --eps,
   `torchattacks.AutoAttack(model, norm='Linf', eps=eps, version='standard', n_classes=10, seed=0)` (APGD-CE,
   APGD-T over 9 target classes, FAB-T over 9 targets, Square with 5000 queries; each later attack only on
   the images the earlier ones did not break) attacks all 450 test images (digits test_x.npy/test_y.npy,
   float [0,1], NCHW 1x28x28) in one batch; the attack call alone is timed (time.perf_counter), and the time
   and image count of each sub-attack are recorded. Robust accuracy = fraction of ALL images whose
   prediction on x_adv is the label AND whose clean prediction is the label (clean misclassifications count
   as not robust). Sanity checks: ||x_adv - x||_inf <= eps (+1e-6) and x_adv in [0,1].
2. georob side (with --georob): `georob measure robust_accuracy MODEL test_x.npy --labels test_y.npy
   --bounds 0,1 -p norm=linf -p eps=[e1,e2,...] --backend ort|tract --threads N --json F -q` (ort when
   ORT_DYLIB_PATH is set, else tract), one run for all eps; `--measure minnorm` runs `georob measure minnorm`
   with the same arguments plus `-p strength=<--strength>` (its summary carries `robust_accuracy@<eps>` too).
   Read: summary `robust_accuracy@<eps>`, per-image `robust@<eps>` where present, else derived from the
   per-image outcome and `norm_linf` (robust unless fooled with norm_linf <= eps; misclassified = not
   robust; checked against the summary), `timings.seconds` (the measure; loading the model outside it) and
   the wall time of the process. A failing command (e.g. a binary without this measure) is logged with its
   stderr and the report is the AutoAttack side alone.
3. Comparison per eps: robust accuracy of both; the images where AutoAttack found an adversarial example and
   georob did not (georob says robust, AutoAttack broke it), and vice versa; images/s of both (AutoAttack:
   images given / seconds of that eps; georob: images / its seconds for all eps together, also compared with
   AutoAttack's total over all eps).
4. OUT/peer_autoattack.md (also printed) and OUT/peer_autoattack.json (machine and versions: python, torch,
   torchattacks, onnxruntime, numpy, CPU model; per-image robust flags of both keyed by image index);
   OUT/georob_<measure>.json is the raw georob output.
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

ROOT, DIGITS = pf.ROOT, pf.DIGITS
log, fmt = pf.log, pf.fmt


class Timed:
    """Wraps one of AutoAttack's sub-attacks: records its calls' image counts and seconds."""

    def __init__(self, attack):
        self.attack = attack
        self.name = type(attack).__name__
        self.calls = []

    def __call__(self, images, labels):
        t0 = time.perf_counter()
        out = self.attack(images, labels)
        self.calls.append({"images": int(len(images)), "seconds": time.perf_counter() - t0})
        return out


def Logits(net):
    """`net` (digits CNN: [0,1] pixels in, logits out) as the module torchattacks attacks: x -> logits."""
    import torch

    class _Logits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    return _Logits(net)


def run_autoattack(model, x: np.ndarray, y: np.ndarray, eps: float, threads: int) -> dict:
    import torch
    import torchattacks

    torch.set_num_threads(threads)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
        clean_ok = (model(xt).argmax(1) == yt).numpy()
    atk = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    subs = [Timed(a) for a in atk._autoattack.attacks]
    atk._autoattack.attacks = subs
    t0 = time.perf_counter()
    adv = atk(xt, yt)
    secs = time.perf_counter() - t0
    adv = adv.detach()
    with torch.no_grad():
        adv_ok = (model(adv).argmax(1) == yt).numpy()
    robust = clean_ok & adv_ok
    linf = float((adv - xt).abs().flatten(1).max(1).values.max()) if len(x) else 0.0
    lo, hi = float(adv.min()), float(adv.max())
    if linf > eps + 1e-6 or lo < -1e-6 or hi > 1 + 1e-6:
        log(f"  WARNING: AutoAttack eps {eps}: max Linf {linf}, x_adv range [{lo}, {hi}]")
    n = len(x)
    row = {
        "tool": "torchattacks AutoAttack (standard)",
        "eps": eps,
        "n": int(n),
        "n_clean_correct": int(clean_ok.sum()),
        "n_robust": int(robust.sum()),
        "robust_accuracy": float(robust.mean()) if n else float("nan"),
        "clean_accuracy": float(clean_ok.mean()) if n else float("nan"),
        "seconds": secs,
        "images_per_s": n / secs if secs > 0 else float("nan"),
        "max_linf": linf,
        "adv_range": [lo, hi],
        "sub_attacks": [{"attack": s.name, "calls": s.calls,
                         "images": sum(c["images"] for c in s.calls),
                         "seconds": sum(c["seconds"] for c in s.calls)} for s in subs],
        "per_image_robust": {str(i): bool(r) for i, r in enumerate(robust)},
    }
    log(f"  AutoAttack eps {eps}: robust accuracy {row['robust_accuracy']:.4f} ({row['n_robust']}/{n}; clean "
        f"{row['n_clean_correct']}/{n}), {secs:.1f} s, {row['images_per_s']:.2f} img/s; "
        + ", ".join(f"{s['attack']} {s['images']} img {s['seconds']:.1f} s" for s in row["sub_attacks"]))
    return row


def eps_key(d: dict, prefix: str, e_text: str, e: float):
    """d[prefix@eps] under the spellings of eps georob might use."""
    for k in dict.fromkeys([e_text, f"{e:g}", repr(e), f"{e}"]):
        if f"{prefix}@{k}" in d:
            return d[f"{prefix}@{k}"]
    return None


def as_flag(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return bool(v >= 0.5)
    if isinstance(v, dict):
        return as_flag(v.get("value"))
    return None


def run_georob(args, eps_texts: list, eps: list, out: Path) -> dict | None:
    if not args.georob:
        return None
    backend = "ort" if os.environ.get("ORT_DYLIB_PATH") else "tract"
    tool = f"georob {args.measure} ({backend})"
    if not (os.path.isfile(args.georob) and os.access(args.georob, os.X_OK)):
        log(f"  {tool}: skipped ({args.georob} is missing or not executable)")
        return {"tool": tool, "skipped": f"{args.georob} missing"}
    rel = DIGITS.relative_to(ROOT)
    out_json = out / f"georob_{args.measure}.json"
    cmd = [args.georob, "measure", args.measure, str(rel / "digits_cnn.onnx"), str(rel / "test_x.npy"),
           "--labels", str(rel / "test_y.npy"), "--bounds", "0,1", "-p", "norm=linf",
           "-p", "eps=[" + ",".join(eps_texts) + "]"]
    if args.measure == "minnorm":
        cmd += ["-p", f"strength={args.strength}"]
    cmd += ["--backend", backend, "--threads", str(args.threads), "--json", str(out_json), "-q"]
    if args.limit is not None:
        cmd += ["--limit", str(args.limit)]
    j, wall = pf.run_georob_json(tool, cmd, out_json, args.georob_timeout)
    if "skipped" in j:
        if j.get("stderr"):
            print(j["stderr"], file=sys.stderr, flush=True)
        return j
    summ = pf.get_path(j, "summary", default={}) or {}
    images = pf.get_path(j, "images", default=[]) or []
    secs = pf.as_float(pf.get_path(j, "timings.seconds", "seconds"))
    n = int(pf.as_float(summ.get("n")) or len(images))
    per_eps = {}
    for et, e in zip(eps_texts, eps):
        ra = pf.as_float(eps_key(summ, "robust_accuracy", et, e))
        flags, source = {}, set()
        for k, im in enumerate(images):
            vals = im.get("values", {}) if isinstance(im.get("values"), dict) else {}
            f = as_flag(eps_key(im, "robust", et, e))
            if f is None:
                f = as_flag(eps_key(vals, "robust", et, e))
            if f is not None:
                source.add(f"robust@{et}")
            outcome = im.get("outcome") or vals.get("outcome")
            if f is None and outcome == "misclassified":
                f = False
            if f is None and outcome is not None:
                # a minimal-norm measure: robust at eps unless it found a perturbation of Linf norm <= eps
                nl = pf.as_float(im.get("norm_linf", vals.get("norm_linf")))
                if outcome != "fooled":
                    f = True
                elif nl is not None:
                    f = nl > e
                if f is not None:
                    source.add("norm_linf > eps")
            if f is not None:
                flags[str(int(im.get("index", k)))] = f
        per_eps[et] = {"robust_accuracy": ra, "per_image_robust": flags or None,
                       "per_image_source": sorted(source)}
        n_flags = len(flags)
        ra_flags = sum(flags.values()) / n_flags if n_flags else None
        if ra is None:
            per_eps[et]["robust_accuracy"] = ra = ra_flags
            per_eps[et]["robust_accuracy_from_per_image"] = True
        elif ra_flags is not None and abs(ra - ra_flags) > 1e-9:
            log(f"  {tool} eps {et}: summary robust accuracy {ra} != {ra_flags} from the per-image flags")
        log(f"  {tool} eps {et}: robust accuracy {fmt(ra, '.4f')}"
            + (f" (per image, from {' / '.join(sorted(source))}: {sum(flags.values())}/{n_flags} robust)"
               if flags else " (no per-image flags)"))
    secs = secs if secs is not None else float("nan")
    log(f"  {tool}: {fmt(secs, '.2f')} s (wall {wall:.2f} s) for all eps")
    return {"tool": tool, "command": cmd, "backend_detail": pf.get_path(j, "backend", default=backend),
            "params": j.get("params"), "summary": summ, "n": n, "seconds": secs, "wall_seconds": wall,
            "images_per_s": n / secs if secs and secs > 0 else float("nan"),
            "images_per_s_wall": n / wall if wall > 0 else float("nan"), "per_eps": per_eps}


def compare(aa_rows: list, gr: dict | None, eps_texts: list) -> list:
    comps = []
    aa_total = sum(r["seconds"] for r in aa_rows)
    for et, r in zip(eps_texts, aa_rows):
        c = {"eps": et, "autoattack_robust_accuracy": r["robust_accuracy"], "autoattack_seconds": r["seconds"]}
        if gr and not gr.get("skipped"):
            g = gr["per_eps"].get(et, {})
            c["georob_robust_accuracy"] = g.get("robust_accuracy")
            flags = g.get("per_image_robust")
            if flags:
                aa = r["per_image_robust"]
                common = [i for i in aa if i in flags]
                c["n_compared"] = len(common)
                c["autoattack_broke_georob_robust"] = [int(i) for i in common if not aa[i] and flags[i]]
                c["georob_broke_autoattack_robust"] = [int(i) for i in common if aa[i] and not flags[i]]
            c["speed_ratio_vs_this_eps"] = (gr["images_per_s"] / r["images_per_s"]
                                            if r["images_per_s"] else float("nan"))
            c["speed_ratio_vs_all_eps"] = (gr["images_per_s"] / (r["n"] / aa_total)
                                           if aa_total > 0 else float("nan"))
        comps.append(c)
    return comps


def report(res: dict, mach: dict) -> str:
    L = ["# Robust accuracy (Linf): georob vs torchattacks AutoAttack (standard)", ""]
    L.append(f"Machine: {mach['cpu']}, {mach['cores']} cores; threads {mach['threads']} "
             f"(torch.set_num_threads / georob --threads); load average at the end "
             f"{', '.join(f'{a:.2f}' for a in mach['load_average']) if mach.get('load_average') else '?'}.")
    L.append(f"Versions: python {mach['python']}, torch {mach['torch']}, torchattacks {mach['torchattacks']}, "
             f"onnxruntime (Python) {mach['onnxruntime']}, numpy {mach['numpy']}; georob {mach.get('georob', 'not run')}"
             + (f" ({mach['georob_binary']}, built {mach['georob_mtime']}, HEAD {mach.get('git_head', '?')})"
                if mach.get("georob_binary") else "") + ".")
    if mach.get("ORT_DYLIB_PATH"):
        L.append(f"georob ort: ORT_DYLIB_PATH={mach['ORT_DYLIB_PATH']}")
    L.append("")
    L.append(f"Model: digits CNN (onnx_models/digits/digits_cnn.onnx), data {res['data']}; torch vs onnxruntime "
             f"logits max abs diff {res['check']['max_abs_diff']:.1e}. AutoAttack: `torchattacks.AutoAttack(model, "
             "norm='Linf', eps=EPS, version='standard', n_classes=10, seed=0)`, all images in one batch, the attack "
             "call alone timed. Robust accuracy over all images (clean misclassifications count as not robust).")
    L.append("")
    L.append("| eps | tool | robust accuracy | seconds | images/s | sub-attacks (images in, seconds) |")
    L.append("|---|---|---|---|---|---|")
    gr = res.get("georob")
    for r, c in zip(res["autoattack"], res["comparison"]):
        subs = "; ".join(f"{s['attack']} {s['images']}, {s['seconds']:.1f}" for s in r["sub_attacks"] if s["calls"])
        L.append(f"| {c['eps']} | AutoAttack | {r['robust_accuracy']:.4f} ({r['n_robust']}/{r['n']}) | "
                 f"{r['seconds']:.2f} | {r['images_per_s']:.2f} | {subs} |")
        if gr and not gr.get("skipped"):
            L.append(f"| {c['eps']} | {gr['tool']} | {fmt(c.get('georob_robust_accuracy'), '.4f')} | "
                     f"(all eps) {fmt(gr['seconds'], '.2f')} | {fmt(gr['images_per_s'], '.2f')} | |")
    L.append("")
    if gr and gr.get("skipped"):
        L.append(f"georob: skipped ({gr['skipped']}).")
        L.append("")
    elif gr:
        for c in res["comparison"]:
            if "n_compared" in c:
                L.append(f"- eps {c['eps']}: AutoAttack broke {len(c['autoattack_broke_georob_robust'])} image(s) georob "
                         f"calls robust {c['autoattack_broke_georob_robust'][:20]}; georob broke "
                         f"{len(c['georob_broke_autoattack_robust'])} AutoAttack leaves robust "
                         f"{c['georob_broke_autoattack_robust'][:20]} (of {c['n_compared']}).")
            L.append(f"- eps {c['eps']}: georob images/s / AutoAttack's at this eps "
                     f"{fmt(c.get('speed_ratio_vs_this_eps'), '.2f')}; / AutoAttack's over all eps together "
                     f"{fmt(c.get('speed_ratio_vs_all_eps'), '.2f')} (georob covers all eps in one run).")
        L.append("")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--georob", default=None, help="the georob binary (omit to run AutoAttack only)")
    ap.add_argument("--eps", default="0.05,0.1", help="comma-separated Linf radii in [0,1] pixel units")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/peer")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test images (also georob --limit)")
    ap.add_argument("--georob-timeout", type=float, default=None)
    ap.add_argument("--measure", default="robust_accuracy",
                    help="georob measure: robust_accuracy, or minnorm (its summary has robust_accuracy@eps too)")
    ap.add_argument("--strength", default="thorough", help="georob -p strength=… (only with --measure minnorm)")
    args = ap.parse_args()
    eps_texts = [e.strip() for e in args.eps.split(",") if e.strip()]
    eps = [float(e) for e in eps_texts]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mm = pf.make_models_module(args.threads)
    import torch
    import torchattacks

    log("== digits CNN ==")
    x, y, model, check = pf.digits_checked(mm, args.threads)
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    model = Logits(model).eval()
    model.requires_grad_(False)
    torch.set_num_threads(args.threads)
    aa = [run_autoattack(model, x, y, e, args.threads) for e in eps]
    gr = run_georob(args, eps_texts, eps, out)
    res = {"model": "digits_cnn",
           "data": "onnx_models/digits/test_x.npy + test_y.npy" + (f" (first {args.limit})" if args.limit else ""),
           "check": check, "eps": eps_texts, "autoattack": aa, "georob": gr, "comparison": compare(aa, gr, eps_texts)}
    versions = {"torch": torch.__version__, "torchattacks": torchattacks.__version__}
    mach = pf.host_info(args, versions)
    md = report(res, mach)
    pf.write_report(out, "peer_autoattack", md, mach, [res])


if __name__ == "__main__":
    main()

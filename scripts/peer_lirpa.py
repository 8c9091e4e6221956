#!/usr/bin/env python3
"""Peer comparison: georob's certified accuracy (Linf, IBP and CROWN) against auto_LiRPA on the digits CNN.

    # auto_LiRPA from its GitHub repository (the PyPI release needs PyTorch < 1.13; setup.py pins
    # torch<2.9, so --no-deps, then the two pure-Python modules it imports at load time):
    git clone https://github.com/Verified-Intelligence/auto_LiRPA ../auto_LiRPA
    git -C ../auto_LiRPA checkout a050a3d61f4cb68b108fa7f07dcb3e4d7ef304df   # "May 2026 release", 0.7.1
    .venv/bin/pip install --no-deps -e ../auto_LiRPA
    .venv/bin/pip install appdirs==1.4.4 graphviz==0.21

    .venv/bin/python scripts/peer_lirpa.py --georob target/release/georob \\
        --threads 2 --eps 0.002,0.005,0.01,0.02 --out /tmp/peer [--chunk 25] [--limit N] \\
        [--lirpa ../auto_LiRPA] [--georob-timeout S] [--georob-upper] [--pgd-steps 50 --pgd-restarts 2]

    # the auto_LiRPA side alone (no --georob):
    .venv/bin/python scripts/peer_lirpa.py --threads 2 --out /tmp/peer

(--lirpa PATH puts an auto_LiRPA checkout first on sys.path instead of installing it.)

1. auto_LiRPA side. The digits CNN is rebuilt in PyTorch as in peer_foolbox.py (imported from it: `DigitsCNN`
   of onnx_models/make_models.py with the weights read from the ONNX initializers) and its logits are checked
   against onnxruntime on all 450 test images (1e-4 abs; a mismatch aborts); `torch.set_num_threads(--threads)`.
   It is wrapped once in `BoundedModule(model, zeros(1,1,28,28), device='cpu')`. For each eps of --eps the
   input set is the Linf ball intersected with the [0,1] box: `PerturbationLpNorm(norm=inf, x_L=clamp(x-eps,
   0,1), x_U=clamp(x+eps,0,1))`, and the specification is the margin matrix C (batch, 9, 10): row j is
   e_label - e_j for each class j != label. `compute_bounds(x=(BoundedTensor(x, ptb),), C=C, method=M,
   bound_upper=False)` with M = 'IBP' (auto_LiRPA folds C into the last Linear layer) and M = 'CROWN' (plain
   CROWN: CROWN intermediate bounds for the unstable ReLU and MaxPool inputs, no alpha optimisation) gives
   lower bounds of the 9 margins; an image is certified iff its clean prediction is the label and all 9 lower
   bounds are > 0. The images go through in chunks of --chunk (default 25; CROWN's memory grows with the chunk
   and with eps: peak RSS about 3 GB at eps 0.002, 6.5 GB at 0.02); the compute_bounds calls alone are timed
   (time.perf_counter, summed over the chunks), after one untimed warm-up call per method on one image.
   Sanity check: every lower bound is <= the margin at the clean image (the centre is in the set).
   Diagnostic (not a method compared): the count certified by IBP on the logits, C applied afterwards
   (margin lower bound = lower(label) - upper(j)), looser than IBP with C folded in.
2. georob side (with --georob): for each method m in ibp, crown one run `georob measure certify
   digits_cnn.onnx test_x.npy --labels test_y.npy --bounds 0,1 -p set=linf -p method=m -p eps=[e1,e2,...]
   -p upper=false --backend tract --threads N --json OUT/georob_certify_m.json -q` (--limit passed on;
   upper=false skips georob's DeepFool falsification, so that its timings.seconds, like auto_LiRPA's, is
   the bounds alone; --georob-upper keeps it). Read: per image every key beginning `certified@` (in
   images[i] or its `values` map; the float after '@' is matched to eps, 1.0 = certified) and `margin_lb@`
   where present, summary `certified_accuracy@<eps>` (checked against the per-image flags),
   `timings.seconds` (the measure; loading the model outside it) and the process's wall time. A failing
   command (e.g. a binary without this measure) is logged with its stderr and the report is the auto_LiRPA
   side alone.
3. Comparison per eps and method: certified counts of both; the images certified by one and not the other
   (indices); georob's margin lower bound minus auto_LiRPA's per image (median, min, max: > 0 means georob
   is tighter); speed ratio = georob images/s (n / its seconds for all eps together) over auto_LiRPA's
   images/s at that eps, and over auto_LiRPA's over all eps together.
   Soundness check (also without --georob): Linf PGD on the margin (--pgd-steps steps of eps/4 from
   --pgd-restarts random starts, projected onto the ball and the box) on every correctly classified image
   gives a margin that some point of the set attains; a margin lower bound above it (beyond 1e-4 relative)
   is unsound, and so is a certified image PGD breaks. Checked for both auto_LiRPA methods (a control) and
   both georob methods; the images georob certifies that auto_LiRPA's CROWN does not are listed (allowed
   when georob is tighter).
4. OUT/peer_lirpa.md (also printed) and OUT/peer_lirpa.json (machine and versions: python, torch, auto_LiRPA
   version and commit, onnxruntime, numpy, CPU model, load averages, peak RSS; per-image clean and certified
   flags and smallest margin lower bounds of auto_LiRPA, per-image flags and margin lower bounds of georob,
   PGD's margins, keyed by image index); OUT/georob_certify_<m>.json are the raw georob outputs.

Reference figures (REFERENCE below): this script's auto_LiRPA counts at commit a050a3d on all 450
images, which any later run should reproduce exactly (the bounds are deterministic, the timings are not):
IBP 426/364/113/0 and CROWN 440/437/427/344 images at eps 0.002/0.005/0.01/0.02. Figures quoted before
(IBP 91.6/50.9/2.0/0 %, CROWN 98.4/97.1/92.4/49.1 %) are not reproduced by any variant tried (box or not,
C folded into the last layer or applied to logit bounds, label or predicted class, CROWN-IBP); 98.4 % at
0.002 is above the clean accuracy (441/450 = 98.0 %), so they cannot be this model, data and definition.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_foolbox as pf  # noqa: E402

ROOT, DIGITS = pf.ROOT, pf.DIGITS
log, fmt = pf.log, pf.fmt

METHODS = ("IBP", "CROWN")
# images of the 450 auto_LiRPA (commit a050a3d) certifies: a later run that differs has another auto_LiRPA,
# model or data
REFERENCE = {"IBP": {0.002: 426, 0.005: 364, 0.01: 113, 0.02: 0},
             "CROWN": {0.002: 440, 0.005: 437, 0.01: 427, 0.02: 344}}


# --------------------------------------------------------------------------- auto_LiRPA side

def import_lirpa(path: str | None) -> dict:
    """Imports auto_LiRPA (from `path` first when given) and returns its version, directory and git commit."""
    if path:
        sys.path.insert(0, str(Path(path).resolve()))
    with warnings.catch_warnings():  # torch.jit.script deprecation, raised while auto_LiRPA loads
        warnings.simplefilter("ignore", FutureWarning)
        import auto_LiRPA
    src = Path(auto_LiRPA.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=30).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {"auto_LiRPA": auto_LiRPA.__version__, "auto_LiRPA_commit": commit, "auto_LiRPA_dir": str(src)}


def margin_spec(y):
    """The specification matrix C (n, 9, 10) of the margins: row j is e_y - e_j for the 9 classes j != y,
    so C @ logits = logit[y] - logit[j] and an image is certified when every row's lower bound is > 0."""
    import torch

    eye = torch.eye(10)
    others = torch.stack([torch.tensor([j for j in range(10) if j != int(t)]) for t in y])
    return eye[y].unsqueeze(1) - eye[others]


def box_ball(x, eps: float):
    """The Linf ball of radius eps around x intersected with the [0,1] box, as auto_LiRPA's perturbation."""
    from auto_LiRPA.perturbations import PerturbationLpNorm

    return PerturbationLpNorm(norm=np.inf, x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1))


def lirpa_bounds(bm, x, y, eps: float, method: str, spec: bool = True):
    """One compute_bounds call on the batch (x, y) and its seconds (the call alone): the lower bounds of
    the margins C @ logits (n, 9), or with spec=False the (lower, upper) bounds of the logits (n, 10)."""
    from auto_LiRPA import BoundedTensor

    bx = BoundedTensor(x, box_ball(x, eps))
    if not spec:
        t0 = time.perf_counter()
        lb, ub = bm.compute_bounds(x=(bx,), method=method)
        return (lb.detach(), ub.detach()), time.perf_counter() - t0
    C = margin_spec(y)
    t0 = time.perf_counter()
    lb, _ = bm.compute_bounds(x=(bx,), C=C, method=method, bound_upper=False)
    return lb.detach(), time.perf_counter() - t0


def run_lirpa(bm, model, x: np.ndarray, y: np.ndarray, eps: float, method: str, chunk: int) -> dict:
    """Certifies the images (x, y) at radius eps with auto_LiRPA's `method`, chunk by chunk: counts,
    seconds (compute_bounds calls only), per-image flags and smallest margin lower bounds."""
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        logits = model(xt)
    clean_ok = (logits.argmax(1) == yt)
    clean_margin = (margin_spec(yt) @ logits.unsqueeze(2)).squeeze(2)
    lbs, secs = [], 0.0
    load0 = os.getloadavg()
    for s in range(0, len(x), chunk):
        lb, dt = lirpa_bounds(bm, xt[s:s + chunk], yt[s:s + chunk], eps, method)
        lbs.append(lb)
        secs += dt
    lb = torch.cat(lbs) if lbs else torch.zeros(0, 9)
    above = float((lb - clean_margin).max()) if len(x) else float("-inf")
    if above > 1e-4:
        log(f"  WARNING: auto_LiRPA {method} eps {eps}: a margin lower bound exceeds the clean margin by {above:.3g}")
    cert = (clean_ok & (lb > 0).all(1)).numpy()
    min_lb = lb.min(1).values.numpy() if len(x) else np.zeros(0)
    n = len(x)
    row = {
        "tool": f"auto_LiRPA {method}",
        "method": method,
        "eps": eps,
        "n": int(n),
        "n_clean_correct": int(clean_ok.sum()),
        "n_certified": int(cert.sum()),
        "certified_accuracy": float(cert.mean()) if n else float("nan"),
        "seconds": secs,
        "images_per_s": n / secs if secs > 0 else float("nan"),
        "chunk": chunk,
        "max_lb_above_clean_margin": above,
        "load_average_before_after": [load0, os.getloadavg()],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "per_image_clean_correct": {str(i): bool(c) for i, c in enumerate(clean_ok.numpy())},
        "per_image_certified": {str(i): bool(c) for i, c in enumerate(cert)},
        "per_image_min_margin_lb": {str(i): round(float(v), 6) for i, v in enumerate(min_lb)},
    }
    log(f"  auto_LiRPA {method:5s} eps {eps:g}: certified {row['n_certified']}/{n} "
        f"({100 * row['certified_accuracy']:.1f} %), {secs:.2f} s, {row['images_per_s']:.2f} img/s, "
        f"load {row['load_average_before_after'][1][0]:.2f}, peak RSS {row['peak_rss_gb']:.1f} GB")
    return row


def ibp_without_spec(bm, x: np.ndarray, y: np.ndarray, eps: float, chunk: int) -> int:
    """Diagnostic: images certified by IBP bounds on the logits, the spec applied afterwards
    (lower(label) - upper(j) > 0 for all j != label); never more than IBP with C folded in."""
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n_cert = 0
    for s in range(0, len(x), chunk):
        (lo, hi), _ = lirpa_bounds(bm, xt[s:s + chunk], yt[s:s + chunk], eps, "IBP", spec=False)
        yy = yt[s:s + chunk]
        true_lo = lo.gather(1, yy[:, None])
        hi = hi.scatter(1, yy[:, None], float("-inf"))
        n_cert += int((true_lo > hi).all(1).sum())
    return n_cert


def pgd_margin(model, x: np.ndarray, y: np.ndarray, eps: float, steps: int, restarts: int,
               seed: int = 0) -> np.ndarray:
    """Linf PGD on the margin inside the ball intersected with the [0,1] box: per image the smallest margin
    min_{j != y} (logit_y - logit_j) met at any iterate (the clean image included). It is attained by a
    point of the set, so no sound lower bound exceeds it, and < 0 is an adversarial example."""
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    lo, hi = (xt - eps).clamp(0, 1), (xt + eps).clamp(0, 1)

    def margin(z):
        return z.gather(1, yt[:, None]).squeeze(1) - z.scatter(1, yt[:, None], float("-inf")).max(1).values

    with torch.no_grad():
        best = margin(model(xt))
    g = torch.Generator().manual_seed(seed)
    for _ in range(restarts):
        xa = (lo + (hi - lo) * torch.rand(xt.shape, generator=g)).requires_grad_(True)
        for k in range(steps + 1):
            m = margin(model(xa))
            best = torch.min(best, m.detach())
            if k == steps:
                break
            (grad,) = torch.autograd.grad(m.sum(), xa)
            with torch.no_grad():
                xa = torch.min(torch.max(xa - eps / 4 * grad.sign(), lo), hi)
            xa.requires_grad_(True)
    return best.numpy()


# --------------------------------------------------------------------------- georob side

def eps_items(d: dict, prefix: str) -> dict:
    """{eps float: value} of the keys `<prefix>@<eps>` of d."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(k, str) and k.startswith(prefix + "@"):
            try:
                out[float(k.split("@", 1)[1])] = v
            except ValueError:
                pass
    return out


def at_eps(items: dict, e: float):
    """The value of `items` ({eps: value}) whose eps equals e (to 1e-9 relative); None if none."""
    for k, v in items.items():
        if math.isclose(k, e, rel_tol=1e-9, abs_tol=1e-12):
            return v
    return None


def as_flag(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return bool(v >= 0.5)
    if isinstance(v, dict):
        return as_flag(v.get("value"))
    return None


def run_georob(args, method: str, eps_texts: list, eps: list, out: Path) -> dict:
    """One `georob measure certify` run of `method` (ibp or crown) for all eps: its per-eps certified
    accuracy and per-image flags, its seconds and wall seconds; or a `skipped` row when it failed."""
    tool = f"georob certify {method} ({args.backend})"
    if not (os.path.isfile(args.georob) and os.access(args.georob, os.X_OK)):
        log(f"  {tool}: skipped ({args.georob} is missing or not executable)")
        return {"tool": tool, "method": method, "skipped": f"{args.georob} missing"}
    rel = DIGITS.relative_to(ROOT)
    out_json = out / f"georob_certify_{method}.json"
    cmd = [args.georob, "measure", "certify", str(rel / "digits_cnn.onnx"), str(rel / "test_x.npy"),
           "--labels", str(rel / "test_y.npy"), "--bounds", "0,1", "-p", "set=linf", "-p", f"method={method}",
           "-p", "eps=[" + ",".join(eps_texts) + "]", "-p", f"upper={'true' if args.georob_upper else 'false'}",
           "--backend", args.backend,
           "--threads", str(args.threads), "--json", str(out_json), "-q"]
    if args.limit is not None:
        cmd += ["--limit", str(args.limit)]
    j, wall = pf.run_georob_json(tool, cmd, out_json, args.georob_timeout)
    if "skipped" in j:  # run_georob_json logged its stderr; the row keeps it
        j["method"] = method
        return j
    summ = pf.get_path(j, "summary", default={}) or {}
    images = pf.get_path(j, "images", default=[]) or []
    secs = pf.as_float(pf.get_path(j, "timings.seconds", "seconds"))
    n = int(pf.as_float(summ.get("n")) or len(images))
    summ_ca = eps_items(summ, "certified_accuracy")
    per_eps = {}
    for et, e in zip(eps_texts, eps):
        flags, lbs = {}, {}
        for k, im in enumerate(images):
            vals = im.get("values") if isinstance(im.get("values"), dict) else {}
            key = str(int(im.get("index", k)))
            f = as_flag(at_eps(eps_items(im, "certified"), e))
            if f is None:
                f = as_flag(at_eps(eps_items(vals, "certified"), e))
            if f is None and (im.get("outcome") or vals.get("outcome")) == "misclassified":
                f = False
            if f is not None:
                flags[key] = f
            lb = pf.as_float(at_eps(eps_items(im, "margin_lb"), e))
            lb = lb if lb is not None else pf.as_float(at_eps(eps_items(vals, "margin_lb"), e))
            if lb is not None:
                lbs[key] = lb
        ca = pf.as_float(at_eps(summ_ca, e))
        ca_flags = sum(flags.values()) / len(flags) if flags else None
        if ca is None:
            ca = ca_flags
        elif ca_flags is not None and abs(ca - ca_flags) > 1e-9:
            log(f"  {tool} eps {et}: summary certified accuracy {ca} != {ca_flags} from the per-image flags")
        per_eps[et] = {"certified_accuracy": ca, "n_certified": sum(flags.values()) if flags else None,
                       "n_flags": len(flags), "per_image_certified": flags or None,
                       "per_image_margin_lb": lbs or None}
        log(f"  {tool} eps {et}: certified accuracy {fmt(ca, '.4f')}"
            + (f" ({sum(flags.values())}/{len(flags)} per image)" if flags else " (no per-image flags)"))
    secs = secs if secs is not None else float("nan")
    log(f"  {tool}: {fmt(secs, '.2f')} s (wall {wall:.2f} s) for all eps")
    return {"tool": tool, "method": method, "command": cmd, "backend_detail": pf.get_path(j, "backend", default=None),
            "params": j.get("params"), "summary": summ, "n": n, "seconds": secs, "wall_seconds": wall,
            "images_per_s": n / secs if secs and secs > 0 else float("nan"),
            "images_per_s_wall": n / wall if wall > 0 else float("nan"), "per_eps": per_eps}


def georob_git_head(binary: str | None) -> str | None:
    """The short HEAD of the git checkout holding the georob binary, `+dirty` when tracked files differ."""
    if not binary or not os.path.isfile(binary):
        return None
    where = str(Path(binary).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


# --------------------------------------------------------------------------- comparison and report

def compare(lirpa: dict, georob: dict, eps_texts: list) -> list:
    """Per eps and method: certified counts, the images certified by one tool only, the speed ratios."""
    comps = []
    for m in METHODS:
        gr = georob.get(m)
        if not gr or gr.get("skipped"):
            continue
        total = sum(r["seconds"] for r in lirpa[m])
        for et, r in zip(eps_texts, lirpa[m]):
            g = gr["per_eps"].get(et, {})
            c = {"eps": et, "method": m, "lirpa_n_certified": r["n_certified"],
                 "georob_n_certified": g.get("n_certified"), "georob_certified_accuracy": g.get("certified_accuracy"),
                 "speed_ratio_vs_this_eps": (gr["images_per_s"] / r["images_per_s"] if r["images_per_s"]
                                             else float("nan")),
                 "speed_ratio_vs_all_eps": gr["images_per_s"] / (r["n"] / total) if total > 0 else float("nan")}
            lbs = g.get("per_image_margin_lb")
            if lbs:  # how much tighter georob's margin lower bounds are (correctly classified images)
                d = np.array([lbs[i] - v for i, v in r["per_image_min_margin_lb"].items()
                              if i in lbs and r["per_image_clean_correct"][i]])
                if d.size:
                    c["margin_lb_diff"] = {"median": float(np.median(d)), "min": float(d.min()), "max": float(d.max())}
            flags = g.get("per_image_certified")
            if flags:
                ours = r["per_image_certified"]
                common = [i for i in ours if i in flags]
                c["n_compared"] = len(common)
                c["only_lirpa"] = [int(i) for i in common if ours[i] and not flags[i]]
                c["only_georob"] = [int(i) for i in common if flags[i] and not ours[i]]
            comps.append(c)
    return comps


def soundness(model, x: np.ndarray, y: np.ndarray, lirpa: dict, georob: dict, eps_texts: list,
              eps: list, steps: int, restarts: int) -> list:
    """Per eps: the images georob certifies (IBP or CROWN) that auto_LiRPA's CROWN does not, and, on every
    correctly classified image, the margin lower bounds of both tools against the smallest margin PGD
    reaches in the same set: a lower bound above it (beyond a 1e-4 relative tolerance) is unsound."""
    rows = []
    for i_e, (et, e) in enumerate(zip(eps_texts, eps)):
        crown = lirpa["CROWN"][i_e]["per_image_certified"]
        correct = lirpa["CROWN"][i_e]["per_image_clean_correct"]
        idx_ok = [int(i) for i, c in correct.items() if c]
        t0 = time.perf_counter()
        pgd = dict(zip(idx_ok, pgd_margin(model, x[idx_ok], y[idx_ok], e, steps, restarts).tolist()))
        secs = time.perf_counter() - t0
        bounds = {f"auto_LiRPA {m}": lirpa[m][i_e]["per_image_min_margin_lb"] for m in METHODS}
        for m in METHODS:
            g = (georob.get(m) or {}).get("per_eps", {}).get(et, {})
            if g.get("per_image_margin_lb"):
                bounds[f"georob {m}"] = g["per_image_margin_lb"]
        row = {"eps": et, "pgd_steps": steps, "pgd_restarts": restarts, "pgd_seconds": secs,
               "pgd_broken": sorted(i for i, v in pgd.items() if v < 0), "above_pgd_margin": {},
               "per_image_pgd_margin": {str(i): round(v, 6) for i, v in pgd.items()}}
        for tool, lb in bounds.items():
            row["above_pgd_margin"][tool] = [
                i for i in idx_ok if str(i) in lb and lb[str(i)] > pgd[i] + 1e-4 * (1 + abs(pgd[i]))]
        for m in METHODS:
            flags = (georob.get(m) or {}).get("per_eps", {}).get(et, {}).get("per_image_certified")
            if flags:
                row[f"georob {m} not auto_LiRPA CROWN"] = sorted(
                    int(i) for i, f in flags.items() if f and i in crown and not crown[i])
                row[f"georob {m} certified, PGD broken"] = [i for i in row["pgd_broken"] if flags.get(str(i))]
        rows.append(row)
        log(f"  soundness eps {et}: PGD ({steps} steps x {restarts}, {secs:.1f} s) breaks {len(row['pgd_broken'])} "
            f"of {len(idx_ok)}; bounds above PGD's margin: "
            + ", ".join(f"{t} {len(v)}" for t, v in row["above_pgd_margin"].items())
            + "".join(f"; georob {m} certifies {row[f'georob {m} not auto_LiRPA CROWN']} not certified by "
                      "auto_LiRPA CROWN" for m in METHODS if f"georob {m} not auto_LiRPA CROWN" in row))
    return rows


def lb_diff(d: dict | None) -> str:
    return f"{d['median']:+.3g} [{d['min']:+.3g}, {d['max']:+.3g}]" if d else "–"


def report(res: dict, mach: dict) -> str:
    n = res["n"]
    L = ["# Certified accuracy (Linf ball ∩ [0,1] box): georob vs auto_LiRPA (IBP, CROWN)", ""]
    la = mach.get("load_average")
    L.append(f"Machine: {mach['cpu']}, {mach['cores']} cores; threads {mach['threads']} (torch.set_num_threads / "
             f"georob --threads); load average at the end {', '.join(f'{a:.2f}' for a in la) if la else '?'}; "
             f"peak RSS of this process {res['peak_rss_gb']:.1f} GB.")
    L.append(f"Versions: python {mach['python']}, torch {mach['torch']}, auto_LiRPA {mach['auto_LiRPA']} "
             f"(commit {mach['auto_LiRPA_commit']}), onnxruntime (Python) {mach['onnxruntime']}, "
             f"numpy {mach['numpy']}; georob {mach.get('georob', 'not run')}"
             + (f" ({mach['georob_binary']}, built {mach['georob_mtime']}, its checkout's HEAD "
                f"{mach.get('georob_git_head') or '?'})" if mach.get("georob_binary") else "")
             + f"; this script at HEAD {mach.get('git_head', '?')}.")
    L.append("")
    L.append(f"Model: digits CNN (onnx_models/digits/digits_cnn.onnx), data {res['data']}; torch vs onnxruntime "
             f"logits max abs diff {res['check']['max_abs_diff']:.1e}. auto_LiRPA: `compute_bounds(C=margins, "
             f"method=IBP|CROWN, bound_upper=False)` on `PerturbationLpNorm(norm=inf, x_L=clamp(x-eps,0,1), "
             f"x_U=clamp(x+eps,0,1))`, chunks of {res['chunk']} images, the compute_bounds calls alone timed. "
             f"Certified = correctly classified and all 9 margin lower bounds > 0; fractions of all {n} images.")
    L.append("")
    L.append("| eps | method | auto_LiRPA certified | reference (of 450) | seconds | images/s | load (1 min) |")
    L.append("|---|---|---|---|---|---|---|")
    for m in METHODS:
        for r in res["lirpa"][m]:
            ref = REFERENCE[m].get(r["eps"])
            L.append(f"| {r['eps']:g} | {m} | {r['n_certified']}/{r['n']} ({100 * r['certified_accuracy']:.1f} %) | "
                     f"{ref if ref is not None else '–'} | {r['seconds']:.2f} | {r['images_per_s']:.2f} | "
                     f"{r['load_average_before_after'][1][0]:.2f} |")
    L.append("")
    L.append("IBP on the logits with C applied afterwards (diagnostic, looser than IBP with C folded into the last "
             "layer): " + ", ".join(f"eps {et} {c}/{n}" for et, c in zip(res["eps"], res["ibp_without_spec"])) + ".")
    L.append(f"Total wall time of the auto_LiRPA side (warm-up, bounds, checks): {res['lirpa_wall_seconds']:.1f} s.")
    L.append("")
    gr = res["georob"] or {}
    for m in METHODS:
        g = gr.get(m)
        if g and g.get("skipped"):
            err = g.get("stderr", "").strip()
            L.append(f"georob {m.lower()}: skipped ({g['skipped']})"
                     + (f": `{err.splitlines()[-1][:300]}`" if err else "") + ".")
            L.append("")
    if res["comparison"]:
        L.append("| eps | method | auto_LiRPA | georob | georob s (all eps) | georob img/s | ratio vs this eps | "
                 "ratio vs all eps | only auto_LiRPA | only georob | margin lb: georob - auto_LiRPA |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for c in res["comparison"]:
            g = gr[c["method"]]
            L.append(f"| {c['eps']} | {c['method']} | {c['lirpa_n_certified']} | {fmt(c['georob_n_certified'], 'd')} | "
                     f"{fmt(g['seconds'], '.2f')} | {fmt(g['images_per_s'], '.2f')} | "
                     f"{fmt(c['speed_ratio_vs_this_eps'], '.2f')} | {fmt(c['speed_ratio_vs_all_eps'], '.2f')} | "
                     f"{c.get('only_lirpa', '–')} | {c.get('only_georob', '–')} | "
                     f"{lb_diff(c.get('margin_lb_diff'))} |")
        L.append("")
        L.append("Speed ratio = georob images/s (n / its timings.seconds, all eps in one run) over auto_LiRPA's at "
                 "this eps, and over auto_LiRPA's for all eps together. Margin lb: georob's `margin_lb@eps` minus "
                 "auto_LiRPA's smallest margin lower bound, median [min, max] over the correctly classified images "
                 "(> 0: georob tighter).")
        L.append("")
    if res["soundness"]:
        s0 = res["soundness"][0]
        L.append(f"Soundness: PGD on the margin ({s0['pgd_steps']} steps of eps/4 x {s0['pgd_restarts']} random "
                 "starts, every correctly classified image) gives a margin some point of the set attains; a margin "
                 "lower bound above it is unsound. Images listed: lower bound above PGD's margin, and images "
                 "georob certifies that auto_LiRPA's CROWN does not (allowed, if georob is tighter).")
        L.append("")
        for s in res["soundness"]:
            above = "; ".join(f"{t} {v[:20]}" for t, v in s["above_pgd_margin"].items())
            extra = "".join(f"; georob {m} certifies, auto_LiRPA CROWN not: {s[f'georob {m} not auto_LiRPA CROWN']}"
                            + (f" (PGD breaks certified {s[f'georob {m} certified, PGD broken']}: UNSOUND)"
                               if s[f"georob {m} certified, PGD broken"] else "")
                            for m in METHODS if f"georob {m} not auto_LiRPA CROWN" in s)
            L.append(f"- eps {s['eps']}: PGD breaks {len(s['pgd_broken'])} image(s) ({s['pgd_seconds']:.0f} s); "
                     f"bound above PGD's margin: {above}{extra}.")
        L.append("")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--georob", default=None, help="the georob binary (omit to run auto_LiRPA only)")
    ap.add_argument("--eps", default="0.002,0.005,0.01,0.02", help="comma-separated Linf radii in [0,1] pixel units")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=25, help="images per compute_bounds call (CROWN memory grows with it)")
    ap.add_argument("--out", default="/tmp/peer")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test images (also georob --limit)")
    ap.add_argument("--lirpa", default=None, help="an auto_LiRPA checkout to import (else the installed one)")
    ap.add_argument("--backend", default="tract", help="georob --backend")
    ap.add_argument("--georob-timeout", type=float, default=None)
    ap.add_argument("--georob-upper", action="store_true",
                    help="let georob run DeepFool too (-p upper=true; its seconds then include the attack)")
    ap.add_argument("--pgd-steps", type=int, default=50, help="PGD steps of the soundness check (0: none)")
    ap.add_argument("--pgd-restarts", type=int, default=2, help="PGD random starts of the soundness check")
    args = ap.parse_args()
    eps_texts = [e.strip() for e in args.eps.split(",") if e.strip()]
    eps = [float(e) for e in eps_texts]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    mm = pf.make_models_module(args.threads)
    import torch

    lirpa_versions = import_lirpa(args.lirpa)
    from auto_LiRPA import BoundedModule

    log(f"auto_LiRPA {lirpa_versions['auto_LiRPA']} commit {lirpa_versions['auto_LiRPA_commit']} "
        f"({lirpa_versions['auto_LiRPA_dir']}); load average {os.getloadavg()}")
    log("== digits CNN ==")
    x, y, model, check = pf.digits_checked(mm, args.threads)
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    model.requires_grad_(False)
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        bm = BoundedModule(model, torch.zeros(1, 1, 28, 28), device="cpu", verbose=False)
    for m in METHODS:  # warm-up, untimed
        lirpa_bounds(bm, torch.from_numpy(x[:1]), torch.from_numpy(y[:1]), eps[0], m)
    lirpa = {m: [] for m in METHODS}
    for e in eps:
        for m in METHODS:
            lirpa[m].append(run_lirpa(bm, model, x, y, e, m, args.chunk))
    loose = [ibp_without_spec(bm, x, y, e, args.chunk) for e in eps]
    lirpa_wall = time.perf_counter() - t_start
    for m in METHODS:
        for r in lirpa[m]:
            ref = REFERENCE[m].get(r["eps"])
            if len(x) == 450 and ref is not None and r["n_certified"] != ref:
                log(f"  NOTE: auto_LiRPA {m} eps {r['eps']:g} certifies {r['n_certified']} images, the reference "
                    f"{ref} (another auto_LiRPA, model or data?)")
    # the binary's version and build time as run (it may be rebuilt while auto_LiRPA runs)
    mach = pf.host_info(args, {"torch": torch.__version__, **lirpa_versions})
    mach["georob_git_head"] = georob_git_head(args.georob)
    georob = {}
    if args.georob:
        log("== georob ==")
        georob = {m: run_georob(args, m.lower(), eps_texts, eps, out) for m in METHODS}
    res = {"model": "digits_cnn",
           "data": "onnx_models/digits/test_x.npy + test_y.npy" + (f" (first {args.limit})" if args.limit else ""),
           "n": int(len(x)), "check": check, "eps": eps_texts, "chunk": args.chunk, "lirpa": lirpa,
           "ibp_without_spec": loose, "lirpa_wall_seconds": lirpa_wall,
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
           "georob": georob or None, "comparison": compare(lirpa, georob, eps_texts),
           "soundness": (soundness(model, x, y, lirpa, georob, eps_texts, eps, args.pgd_steps, args.pgd_restarts)
                         if args.pgd_steps > 0 else [])}
    mach["load_average"] = os.getloadavg()
    md = report(res, mach)
    pf.write_report(out, "peer_lirpa", md, mach, [res])


if __name__ == "__main__":
    main()

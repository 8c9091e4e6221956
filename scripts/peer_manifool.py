#!/usr/bin/env python3
"""Peer comparison: georob's ManiFool against the authors' reference implementation.

    git clone https://github.com/moosavism/ManiFool /tmp/ManiFool        # or any bare/mirror git dir of it
    .venv/bin/python scripts/peer_manifool.py --ref /tmp/ManiFool \\
        --georob target/release/georob --threads 2 --which both --groups affine,similarity \\
        --out /tmp/peer [--limit N] [--max-iter 100] [--effnet-max-iter M] [--candidates N_c] \\
        [--ref-timeout 600] [--numerical]

Reference: Kanbak, Moosavi-Dezfooli, Frossard, "Geometric robustness of deep networks: analysis and
improvement", CVPR 2018; code github.com/moosavism/ManiFool (2017/18, PyTorch 0.3). The reference is used
unmodified apart from the compatibility patches listed in PATCHES below: `functions/` is exported from --ref
(a checkout is copied; a bare/mirror git dir is `git archive HEAD`-ed) into a temporary directory, each
patch is an exact `old -> new` string replacement that must apply exactly once (printed in the log and
listed in the report), and the algorithm stays the authors': PyTorch 0.3 -> 2.x API only (`torch.gels`,
0-dim tensors, the shape of the `backward` seed). Nothing of the authors' code is copied into this
repository and the user's checkout is never written.

For each model and group (reference modes 'affine' / 'similarity' = georob groups of the same names):

1. Reference side. The PyTorch models are rebuilt as in peer_foolbox.py (digits: `DigitsCNN` of
   onnx_models/make_models.py with the weights read from the ONNX initializers; EfficientNet-Lite0:
   `load_effnet()`), and their logits are checked against onnxruntime before anything is attacked. Only
   correctly classified images are attacked, one `manifool()` call per image (multi-target: binary ManiFool
   towards each of the top N_c other classes, each up to maxIter iterations, keeping the smallest geodesic
   score) with `cuda_on=False, crop=None, numerical=False` (the analytic Jacobian `jacobian_from_gradient`;
   --numerical for the finite-difference one the authors' demo scripts use), `verbose=0, geo_step=0.05`,
   `batch_size=None` (the whole line search in one model call), `torch.set_num_threads(--threads)`.
   Each `manifool()` call alone is timed (time.perf_counter); a call over --ref-timeout seconds is stopped
   (SIGALRM) and counted as a failure ("timeouts" column).
   - digits CNN (10 classes, 28x28 gray): the authors' MNIST_manifool.py settings: images x255 (the wrapper
     divides by 255 before DigitsCNN), maxIter 100, step_sizes logspace(-2, log10 0.5, 10), gamma 0.8;
     N_c = 9 (every other class).
   - EfficientNet-Lite0 (224x224 RGB): the authors' ImageNet_manifool.py settings: the network sees the
     *normalised* tensor (their script feeds `Normalize(mean, std)` output straight to ResNet-50, so the
     zero fill and ||I|| are in normalised space), maxIter 100, step_sizes logspace(-2, 0, 20), gamma 0; data
     photos_x.npy (normalised model space (u-0.498)/0.502; the wrapper is the identity); N_c = 10. georob
     runs on the same photos_x.npy, where it also works in model space (zero fill = 0 in model space,
     ||x|| of the normalised tensor), so both measure exactly the same quantity. (ImageNet_manifool.py uses
     batch_size=3, crop=224 and numerical=True; with batch_size=3 and 20 step sizes its last line-search
     chunk reuses a stale image slot, so batch_size=None is used here; the photos are already 224x224.)
   Scale: the geodesic score ||path|| / ||I|| and the reference's iteration (unit-normalised direction, steps
   in parameter space, logit margins) are invariant to a positive rescaling of the pixels when the rescaling
   is undone inside the wrapper; the digits run checks this on its first image (x255 vs x1, "scale check").
2. georob side: `georob measure manifool MODEL DATA --labels Y -p group=G -p max_iter=M -p candidates=N_c
   -p search=S` with `--backend tract`, and `--backend ort` when ORT_DYLIB_PATH is set; `--threads`. georob's
   own `timings.seconds` (the measure, its gradient graphs and sessions included; loading the model outside
   it) and the wall time of the process are both reported.
   With --search per_class (the default here) georob runs the paper's multiclass form like the reference:
   one binary search per candidate class, each bounded by max_iter, the smallest score kept; with
   --search joint (georob's own default) max_iter bounds one search towards the closest of the N_c classes.
3. Cross-check of the score: the reference's own `geodesic_distance()` is evaluated on georob's final
   transforms (converted to the reference's centre, see below) and compared with georob's `score`.
4. OUT/peer_manifool.md (also printed) and OUT/peer_manifool.json (all numbers, per-image scores and
   parameters of both sides); OUT/georob_<model>_<group>[_ort].json are the raw georob outputs.

Run time: on EfficientNet the reference spends several seconds per iteration on 2 cores (PyTorch's forward
of the 20 line-search images plus one backward; ~5-10 s on a busy 2-core EPYC), and up to N_c x maxIter
iterations per image (>5 min for one photo at the defaults): --effnet-max-iter, --candidates (both sides)
and --ref-timeout keep a run short. Only `functions/` of the reference is exported (all it needs).

The score. Both sides score a final warp matrix T (output -> input coordinates) the same way: tau = log T in
the basis (R, Tx, Ty, S, H1, H2) (radians, pixels, log-scale; the same basis and order in both: reference
`make_algebra_matrix`/`tform_2_tau`, georob transforms/src/group.rs), the path t -> warp(I, exp(t tau)),
t in [0,1], cut at parameter steps of 0.05 (Euclidean norm of tau), the sum of the image-space chord
lengths ||warp_{k+1} - warp_k||_2 over all channels, divided by ||I||_2 (reference
helpers/geodesic_distance.py; georob transforms/src/geodesic.rs, PathSteps::ParamStep(0.05), Chords).
Bilinear sampling with zero fill on both sides (reference: skimage.transform.warp, order=1, mode='constant',
cval=0; georob: border=zero). Convention differences found:
- Centre: georob transforms about the true image centre ((w-1)/2, (h-1)/2) (pixel centres at integers).
  The reference's `transform_matrix_offset_center` uses (w/2 + 0.5, h/2 + 0.5) in skimage's (col, row)
  coordinates, whose pixel centres are also at integers, i.e. one pixel right of and below the true centre
  (its analytic Jacobian, `jacobian_from_gradient`, does use the true centre). The warps are conjugate by
  a one-pixel translation: for rotations, scalings and shears the reference's warp carries an extra
  translation of (I - A)(1, 1). The score is a property of the warp, and exp/log commute with conjugation,
  so a given warp has the same path either way; only tau's translation part, hence its norm and the number
  of 0.05 steps, changes slightly. The cross-check (3) converts georob's matrix M to the reference's centre
  as M' = O(-1,-1) M O(1,1) (O(a,b) the translation by (a,b)).
- Translation units: pixels on both sides (the Lie-algebra translation entries are in pixels; rotation in
  radians), so tau and the 0.05 step mean the same on both.
- Tangent side: the reference moves by left composition T <- exp(-v) T but its analytic Jacobian is the
  right tangent (image gradient times generator at the current image); georob uses the left tangent of its
  own warp (exact for left composition). These agree to first order near the identity, and only steer the
  search; the score is computed the same way.
- Algorithms differ beyond that (georob: one multi-class DeepFool-style step in the metric J^T J per
  iteration, overshoot 0.02, 20 log-spaced line-search factors and a refinement of the last step;
  reference: N_c binary searches with a fixed step-size grid whose line search takes the step that most
  decreases the margin, momentum gamma, and a backtrack that undoes the last step and re-applies
  (1 - 0.8^k) of it for the first k that fools, so at least 20% of the last step is always kept), so
  per-image scores are expected to differ; success rates and medians are what compare. Near a boundary
  (a flip within one step) the reference's final point can therefore lie well past it.

Images/s = images attacked / seconds. Success rate = fooled / attacked. Median score = median geodesic
score, over the images both tools fool ("common") and over each tool's own fooled images ("own").
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_foolbox import (DIGITS, EFF, ROOT, as_float, compare, digits_checked, fmt,  # noqa: E402
                          georob_backends, host_info, log, make_models_module, ort_logits, torch_logits,
                          write_report)

# (file, old, new, why): exact string replacements, each must occur exactly once.
PATCHES = [
    ("functions/algorithms/manifool.py",
     "    k_org = k_org[0]",
     "    k_org = k_org.reshape(-1)[0]",
     "get_output_label(output, i): torch.max over dim 0 of a row is a 0-dim tensor in torch>=0.4, "
     "which cannot be indexed with [0]"),
    ("functions/algorithms/manifool.py",
     "            gg = torch.FloatTensor([1,-1])",
     "            gg = torch.FloatTensor([[1,-1]])",
     "backward() seed must have the shape of output[:, [k, l]], (1, 2) (torch>=1.x checks it)"),
    ("functions/algorithms/manifool.py",
     "u_tar = torch.gels(w_tar,J_n)[0]",
     "u_tar = torch.linalg.lstsq(J_n,w_tar).solution",
     "torch.gels(B, A) (least squares min ||A X - B||) was removed; torch.linalg.lstsq(A, B) is its "
     "replacement (the following [:n] slice is then a no-op)"),
    ("functions/algorithms/manifool.py",
     "diff_x, s = torch.max((diff_pre - diff_curr),0)",
     "diff_x, s = torch.max((diff_pre - diff_curr),0,keepdim=True)",
     "torch 0.3 had no 0-dim tensors: max over the only dim of a 1-D tensor gave size-1 tensors, which the "
     "code indexes with [0]; keepdim=True gives the same"),
]


# --------------------------------------------------------------------------- reference

def git_commit(ref: Path) -> str | None:
    """HEAD of a checkout (ref/.git) or of a bare/mirror git dir; None for a plain copy."""
    if (ref / ".git").exists():
        cmds = [["git", "-C", str(ref), "rev-parse", "HEAD"]]
    elif (ref / "HEAD").is_file() and (ref / "objects").is_dir():
        cmds = [["git", "--git-dir", str(ref), "rev-parse", "HEAD"]]
    else:
        return None
    for cmd in cmds:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except OSError:
            return None
        if r.returncode == 0:
            return r.stdout.strip()
    return None


def export_reference(ref: Path, dest: Path) -> dict:
    """Copies (checkout) or `git archive`s (bare/mirror git dir) the reference's functions/ into dest and
    applies PATCHES there. Returns provenance."""
    if (ref / "functions" / "algorithms" / "manifool.py").is_file():
        shutil.copytree(ref / "functions", dest / "functions", ignore=shutil.ignore_patterns("__pycache__"))
        how = f"copied {ref}/functions"
    else:
        arch = subprocess.run(["git", "--git-dir", str(ref), "archive", "--format=tar", "HEAD", "functions"],
                              capture_output=True)
        if arch.returncode != 0:
            raise SystemExit(f"--ref {ref}: neither a checkout with functions/ nor a git dir "
                             f"({arch.stderr.decode(errors='replace').strip()})")
        subprocess.run(["tar", "-x", "-C", str(dest)], input=arch.stdout, check=True)
        how = f"git archive HEAD functions from {ref}"
    commit = git_commit(ref)
    log(f"reference: {how} -> {dest} (commit {commit or '?'})")
    applied = []
    for fname, old, new, why in PATCHES:
        p = dest / fname
        text = p.read_text()
        n = text.count(old)
        if n != 1:
            raise SystemExit(f"patch {old!r} occurs {n} times in {fname} (expected once): wrong reference version?")
        p.write_text(text.replace(old, new))
        log(f"  patch {fname}: {old.strip()!r} -> {new.strip()!r}  ({why})")
        applied.append({"file": fname, "old": old, "new": new, "why": why})
    return {"source": str(ref), "how": how, "commit": commit, "patches": applied}


def import_reference(dest: Path):
    sys.path.insert(0, str(dest))
    import functions.algorithms.manifool as refmf  # noqa: E402  (prints a line when pycuda is missing)
    import functions.helpers.geodesic_distance as refgeo  # noqa: E402

    return refmf, refgeo


class Wrapped:
    """nn.Module factory: net((x / scale)), counting model calls and samples."""

    @staticmethod
    def make(net, scale: float):
        import torch.nn as nn

        class W(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net
                self.scale = float(scale)
                self.calls = 0
                self.samples = 0

            def forward(self, x):
                self.calls += 1
                self.samples += int(x.shape[0])
                return self.net(x / self.scale if self.scale != 1.0 else x)

        w = W().eval()
        for p in w.parameters():
            p.requires_grad_(False)
        return w


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def ref_params(refgeo, m: np.ndarray, mode: str) -> list:
    import scipy.linalg as sli

    return [float(v) for v in refgeo.tform_2_tau(np.real(sli.logm(m)), mode)]


def run_reference(refmf, refgeo, net, x: np.ndarray, y: np.ndarray, mode: str, cfg: dict, scale: float,
                  n_c: int, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    w = Wrapped.make(net, scale)
    with torch.no_grad():
        pred = torch_logits(w, (x * scale).astype(np.float32)).argmax(1)
    attacked = [int(i) for i in np.nonzero(pred == y)[0]]
    if attacked:  # warm-up, untimed: the first backward() imports torch internals lazily (~1 s)
        xw = torch.from_numpy(np.ascontiguousarray(x[attacked[0]:attacked[0] + 1] * scale, dtype=np.float32))
        xw.requires_grad_(True)
        w(xw)[0, 0].backward()
    per, total = [], 0.0
    old = signal.signal(signal.SIGALRM, _alarm) if args.ref_timeout else None
    try:
        for i in attacked:
            I = torch.from_numpy(np.ascontiguousarray(x[i] * scale, dtype=np.float32))
            w.calls = w.samples = 0
            rec = {"index": i, "label": int(y[i])}
            t0 = time.perf_counter()
            if args.ref_timeout:
                signal.setitimer(signal.ITIMER_REAL, args.ref_timeout)
            try:
                out = refmf.manifool(I, w, mode, maxIter=cfg["max_iter"], step_sizes=cfg["step_sizes"],
                                     gamma=cfg["gamma"], batch_size=None, cuda_on=False, crop=None,
                                     numerical=args.numerical, verbose=0, geo_step=0.05, N_c=n_c)
                rec["timeout"] = False
            except _Timeout:
                out = None
                rec["timeout"] = True
            except Exception as e:  # an exception inside the reference: a failure, recorded
                out = None
                rec["timeout"] = False
                rec["error"] = f"{type(e).__name__}: {e}"
            finally:
                if args.ref_timeout:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            dt = time.perf_counter() - t0
            total += dt
            rec.update(seconds=dt, model_calls=w.calls, model_samples=w.samples)
            if out is None:
                rec.update(success=False, score=None)
            else:
                gd = float(out["geo_dist"])
                rec["org_label"] = int(out["org_label"])
                rec["success"] = bool(np.isfinite(gd))
                rec["score"] = gd if rec["success"] else None
                rec["target"] = int(out["target"])
                if rec["success"]:
                    rec["fooling_label"] = int(out["fooling_label"])
                    m = out["tfm"].tform_matrix.numpy().astype(np.float64)
                    rec["matrix"] = m.tolist()
                    rec["params"] = ref_params(refgeo, m, mode)
                    with torch.no_grad():
                        k = int(w(out["output_image"].unsqueeze(0)).argmax(1)[0])
                    rec["recheck_fooled"] = k != rec["org_label"]
            per.append(rec)
            status = "fooled" if rec["success"] else ("TIMEOUT" if rec["timeout"] else
                                                      ("ERROR " + rec["error"] if "error" in rec else "failed"))
            log(f"    ref #{i}: {status}"
                f"{'' if rec['score'] is None else ', score %.4f' % rec['score']}, {dt:.2f} s, "
                f"{w.calls} model calls ({w.samples} samples)")
    finally:
        if old is not None:
            signal.signal(signal.SIGALRM, old)
    n = len(per)
    scores = [r["score"] for r in per if r["success"]]
    return {
        "tool": "reference (moosavism/ManiFool)",
        "n_total": int(len(x)),
        "n_attacked": n,
        "n_fooled": len(scores),
        "n_timeout": sum(r["timeout"] for r in per),
        "n_error": sum("error" in r for r in per),
        "success_rate": len(scores) / n if n else float("nan"),
        "median_score_own": float(np.median(scores)) if scores else float("nan"),
        "seconds": total,
        "wall_seconds": total,
        "images_per_s": n / total if total > 0 else float("nan"),
        "recheck_all_fooled": all(r.get("recheck_fooled", True) for r in per),
        "settings": {"maxIter": cfg["max_iter"], "step_sizes": [float(s) for s in cfg["step_sizes"]],
                     "gamma": cfg["gamma"], "N_c": n_c, "numerical": args.numerical, "batch_size": None,
                     "crop": None, "geo_step": 0.05, "pixel_scale": scale, "timeout_s": args.ref_timeout},
        "per_image": per,
    }


def ref_score_of_matrix(refgeo, x_ref: np.ndarray, m_georob, mode: str) -> float:
    """The reference's geodesic_distance / ||I|| of georob's warp matrix, moved to the reference's centre."""
    import torch

    o = lambda a, b: np.array([[1.0, 0, a], [0, 1.0, b], [0, 0, 1.0]])  # noqa: E731
    mp = o(-1.0, -1.0) @ np.asarray(m_georob, dtype=np.float64) @ o(1.0, 1.0)
    I = torch.from_numpy(np.ascontiguousarray(x_ref, dtype=np.float32))
    return float(refgeo.geodesic_distance(I, 0.05, torch.from_numpy(mp), mode)[0] / I.norm())


# --------------------------------------------------------------------------- georob

def run_georob(args, model: Path, data: Path, labels: Path, group: str, n_c: int, max_iter: int,
               backend: str, out_json: Path) -> dict:
    tool = f"georob {backend}"
    georob = args.georob
    if not (georob and os.path.isfile(georob) and os.access(georob, os.X_OK)):
        log(f"  {tool}: skipped ({georob} is missing or not executable)")
        return {"tool": tool, "skipped": f"{georob} missing"}
    cmd = [georob, "measure", "manifool", str(model.relative_to(ROOT)), str(data.relative_to(ROOT)),
           "--labels", str(labels.relative_to(ROOT)), "-p", f"group={group}", "-p", f"max_iter={max_iter}",
           "-p", f"candidates={n_c}", "-p", f"search={args.search}", "--backend", backend, "--threads", str(args.threads), "-q",
           "--json", str(out_json)]
    if args.limit_for is not None:
        cmd += ["--limit", str(args.limit_for)]
    log("  $ " + " ".join(cmd))
    if out_json.exists():
        out_json.unlink()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=args.georob_timeout)
    except subprocess.TimeoutExpired:
        log(f"  {tool}: skipped (over --georob-timeout {args.georob_timeout} s)")
        return {"tool": tool, "skipped": f"timeout {args.georob_timeout} s", "command": cmd}
    except OSError as e:
        log(f"  {tool}: skipped ({e})")
        return {"tool": tool, "skipped": str(e), "command": cmd}
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out_json.exists():
        log(f"  {tool}: failed (rc {proc.returncode}): {proc.stderr.strip()[-800:]}")
        return {"tool": tool, "skipped": f"rc {proc.returncode}", "command": cmd, "stderr": proc.stderr[-2000:]}
    j = json.loads(out_json.read_text())
    mats = {t["index"]: t["matrix"] for t in (j.get("extra") or {}).get("transforms", [])}
    names = (j.get("extra") or {}).get("param_names") or []
    per = []
    for k, im in enumerate(j.get("images", [])):
        idx = int(im.get("index", k))
        outcome = im.get("outcome") or ("fooled" if im.get("success") else "failed")
        if outcome == "misclassified":
            continue
        fooled = outcome == "fooled"
        rec = {"index": idx, "label": im.get("label"), "outcome": outcome, "success": fooled,
               "score": as_float(im.get("score")) if fooled else None,
               "iterations": as_float(im.get("iterations"))}
        if fooled:
            rec["fooling_label"] = int(im["adv_pred"]) if im.get("adv_pred") is not None else None
            rec["params"] = [as_float(im.get(f"param_{n}")) for n in names]
            rec["matrix"] = mats.get(idx)
        per.append(rec)
    summ = j.get("summary", {})
    secs = as_float((j.get("timings") or {}).get("seconds"))
    n = len(per)
    scores = [r["score"] for r in per if r["success"]]
    med = as_float(summ.get("median_score"))
    if scores and med is not None and abs(med - float(np.median(scores))) > 1e-9 * max(1.0, med):
        log(f"  {tool}: summary median_score {med} != median of per-image scores {np.median(scores)}")
    return {
        "tool": tool,
        "command": cmd,
        "backend_detail": (j.get("model") or {}).get("backend_detail", backend),
        "params": j.get("params"),
        "space": j.get("space"),
        "n_total": int(as_float(summ.get("n")) or len(j.get("images", []))),
        "n_attacked": n,
        "n_fooled": len(scores),
        "success_rate": len(scores) / n if n else float("nan"),
        "summary_success_rate": as_float(summ.get("success_rate")),
        "median_score_own": float(np.median(scores)) if scores else float("nan"),
        "seconds": secs if secs is not None else float("nan"),
        "wall_seconds": wall,
        "images_per_s": n / secs if secs else float("nan"),
        "images_per_s_wall": n / wall if wall > 0 else float("nan"),
        "timings": j.get("timings"),
        "per_image": per,
    }


# --------------------------------------------------------------------------- per model

def compare_rows(ref: dict, rows: list, refgeo, x_ref: np.ndarray, mode: str) -> None:
    """Adds common-success medians, paired ratios and the score cross-check to each georob row."""
    rs = {r["index"]: r for r in ref["per_image"]}
    for row in rows:
        if row.get("skipped"):
            continue
        gs = {r["index"]: r for r in row["per_image"]}
        common = sorted(i for i in rs if i in gs and rs[i]["success"] and gs[i]["success"])
        row["common_indices"] = common
        row["n_common"] = len(common)
        row["median_score_common"] = float(np.median([gs[i]["score"] for i in common])) if common else float("nan")
        row["ref_median_score_common"] = (float(np.median([rs[i]["score"] for i in common]))
                                          if common else float("nan"))
        ratios = [gs[i]["score"] / rs[i]["score"] for i in common if rs[i]["score"] > 0]
        row["median_ratio_vs_ref"] = float(np.median(ratios)) if ratios else float("nan")
        row["frac_lower_than_ref"] = float(np.mean([gs[i]["score"] < rs[i]["score"] for i in common])) \
            if common else float("nan")
        row["same_attacked_images"] = sorted(rs) == sorted(gs)
        # the reference's geodesic_distance on georob's transforms
        rel = []
        for r in row["per_image"]:
            if r["success"] and r.get("matrix") is not None:
                s_ref = ref_score_of_matrix(refgeo, x_ref[r["index"]], r["matrix"], mode)
                r["ref_geodesic_of_georob_tfm"] = s_ref
                if r["score"]:
                    rel.append(abs(s_ref - r["score"]) / r["score"])
        row["xcheck_median_rel_diff"] = float(np.median(rel)) if rel else float("nan")
        row["xcheck_max_rel_diff"] = float(np.max(rel)) if rel else float("nan")


def do_model(args, name: str, title: str, net, x: np.ndarray, y: np.ndarray, scale: float, cfg: dict,
             n_c: int, model_path: Path, data_path: Path, labels_path: Path, refmf, refgeo, out: Path,
             check: dict, data_desc: str) -> list:
    results = []
    for group in args.groups:
        log(f"== {name}, {group} ==")
        ref = run_reference(refmf, refgeo, net, x, y, group, cfg, scale, n_c, args)
        log(f"  reference: {ref['n_attacked']}/{ref['n_total']} attacked, success {ref['success_rate']:.4f}, "
            f"median score {fmt(ref['median_score_own'], '.4f')}, {ref['seconds']:.2f} s, "
            f"{fmt(ref['images_per_s'], '.3f')} img/s")
        rows = []
        for backend, suffix in georob_backends():
            r = run_georob(args, model_path, data_path, labels_path, group, n_c, cfg["max_iter"], backend,
                           out / f"georob_{name}_{group}{suffix}.json")
            if not r.get("skipped"):
                log(f"  {r['tool']}: {r['n_attacked']}/{r['n_total']} attacked, success {r['success_rate']:.4f}, "
                    f"median score {fmt(r['median_score_own'], '.4f')}, {r['seconds']:.3f} s "
                    f"(wall {r['wall_seconds']:.3f} s)")
            rows.append(r)
        compare_rows(ref, rows, refgeo, x * scale, group)
        res = {"model": name, "title": title, "group": group, "data": data_desc, "check": check,
               "reference": ref, "georob": rows}
        if args.scale_check and name == "digits_cnn" and group == args.groups[0]:
            res["scale_check"] = scale_check(refmf, net, x, y, group, cfg, n_c, args, ref)
        results.append(res)
    return results


def scale_check(refmf, net, x, y, mode, cfg, n_c, args, ref) -> dict:
    """The first attacked image again at pixel scale 1 (wrapper identity) vs the run's scale 255."""
    import torch

    first = next((r for r in ref["per_image"] if r["success"]), None)
    if first is None:
        return {"skipped": "no fooled image"}
    i = first["index"]
    w = Wrapped.make(net, 1.0)
    out = refmf.manifool(torch.from_numpy(np.ascontiguousarray(x[i], dtype=np.float32)), w, mode,
                         maxIter=cfg["max_iter"], step_sizes=cfg["step_sizes"], gamma=cfg["gamma"], batch_size=None,
                         cuda_on=False, crop=None, numerical=args.numerical, verbose=0, geo_step=0.05, N_c=n_c)
    s1 = float(out["geo_dist"])
    log(f"  scale check (image #{i}): score at pixel scale 255 {first['score']:.6f}, at scale 1 {s1:.6f}")
    return {"index": i, "score_scale_255": first["score"], "score_scale_1": s1,
            "rel_diff": abs(s1 - first["score"]) / first["score"]}


def do_digits(args, mm, refmf, refgeo, out: Path) -> list:
    log("== digits CNN ==")
    x, y, net, check = digits_checked(mm, args.threads)
    args.limit_for = args.limit if args.limit is not None else 100
    x, y = x[:args.limit_for], y[:args.limit_for]
    cfg = {"max_iter": args.max_iter, "step_sizes": np.logspace(-2, np.log10(0.5), 10), "gamma": 0.8}
    return do_model(args, "digits_cnn", "digits CNN (onnx_models/digits/digits_cnn.onnx, 28×28 gray, 10 classes)",
                    net, x, y, 255.0, cfg, args.candidates or 9, DIGITS / "digits_cnn.onnx", DIGITS / "test_x.npy",
                    DIGITS / "test_y.npy", refmf, refgeo, out, check,
                    f"onnx_models/digits/test_x.npy + test_y.npy (first {args.limit_for})")


def do_effnet(args, mm, refmf, refgeo, out: Path) -> list:
    import torch

    log("== EfficientNet-Lite0 ==")
    x = np.load(EFF / "photos_x.npy").astype(np.float32)  # normalised model space (u - 0.498) / 0.502
    y = np.load(EFF / "photos_y.npy").astype(np.int64)
    net = mm.load_effnet()
    torch.set_num_threads(args.threads)
    check = compare("efficientnet_lite0 (5 photos, photos_x.npy)", torch_logits(net, x),
                    ort_logits(EFF / "efficientnet_lite0.onnx", x, args.threads), 1e-3)
    args.limit_for = args.limit
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    cfg = {"max_iter": args.effnet_max_iter or args.max_iter, "step_sizes": np.logspace(-2, 0, 20), "gamma": 0.0}
    return do_model(args, "efficientnet_lite0",
                    "EfficientNet-Lite0 (onnx_models/efficientnet_lite0/efficientnet_lite0.onnx, 224×224 RGB, "
                    "model space (u-0.498)/0.502)", net, x, y, 1.0, cfg, args.candidates or 10, EFF / "efficientnet_lite0.onnx",
                    EFF / "photos_x.npy", EFF / "photos_y.npy", refmf, refgeo, out, check,
                    "onnx_models/efficientnet_lite0/photos_x.npy + photos_y.npy (normalised model space, both sides)"
                    + (f" (first {args.limit})" if args.limit is not None else ""))


# --------------------------------------------------------------------------- report

def machine(args, prov: dict) -> dict:
    import scipy
    import skimage
    import torch

    return host_info(args, {"torch": torch.__version__, "skimage": skimage.__version__,
                            "scipy": scipy.__version__, "reference": prov})


def report(results: list, mach: dict, args) -> str:
    prov = mach["reference"]
    L = ["# ManiFool: georob vs the authors' reference (moosavism/ManiFool)", ""]
    L.append(f"Machine: {mach['cpu']}, {mach['cores']} cores; threads {mach['threads']} "
             f"(torch.set_num_threads / georob --threads); load average at the end "
             f"{', '.join(f'{a:.2f}' for a in mach['load_average']) if mach.get('load_average') else '?'}.")
    L.append(f"Versions: python {mach['python']}, torch {mach['torch']}, scikit-image {mach['skimage']}, "
             f"scipy {mach['scipy']}, numpy {mach['numpy']}, onnxruntime (Python) {mach['onnxruntime']}; "
             f"georob {mach.get('georob', 'not run')}"
             + (f" ({mach['georob_binary']}, built {mach['georob_mtime']}, HEAD {mach.get('git_head', '?')})"
                if mach.get("georob_binary") else "") + ".")
    L.append(f"Reference: {prov['how']}, commit {prov['commit'] or '?'}, with {len(prov['patches'])} "
             "compatibility patches (PyTorch 0.3 -> 2.x, nothing else):")
    for p in prov["patches"]:
        L.append(f"- `{p['file']}`: `{p['old'].strip()}` -> `{p['new'].strip()}` ({p['why']})")
    if mach.get("ORT_DYLIB_PATH"):
        L.append(f"georob ort: ORT_DYLIB_PATH={mach['ORT_DYLIB_PATH']}")
    L.append("")
    L.append("Score: geodesic score ||path t -> warp(I, exp(t log T))|| / ||I||_2, chords at parameter steps of "
             "0.05, bilinear, zero fill (same definition on both sides). Reference time: the `manifool()` calls "
             "alone; georob: `timings.seconds` from its JSON (the measure, its gradient graphs and sessions included; "
             "loading the model outside it), 'wall' the whole "
             f"process. Reference Jacobian: {'numerical (finite differences)' if args.numerical else 'analytic (jacobian_from_gradient)'}.")
    L.append("")
    for res in results:
        ref = res["reference"]
        st = ref["settings"]
        L.append(f"## {res['title']} — {res['group']}")
        L.append("")
        L.append(f"Data: {res['data']}. torch vs onnxruntime logits: max abs diff {res['check']['max_abs_diff']:.1e} "
                 f"(max |logit| {res['check']['max_abs_logit']:.1f}). Reference: maxIter {st['maxIter']} per target, "
                 f"N_c {st['N_c']}, gamma {st['gamma']}, {len(st['step_sizes'])} step sizes "
                 f"{st['step_sizes'][0]:g}..{st['step_sizes'][-1]:g} (log-spaced), pixels ×{st['pixel_scale']:g}"
                 + (f", per-image timeout {st['timeout_s']:g} s" if st["timeout_s"] else "") + ". georob: "
                 f"max_iter {st['maxIter']} (per search), candidates {st['N_c']}, search {args.search}, other parameters default.")
        L.append("")
        L.append("| tool | images attacked | success rate | median score, common (n) | median score, own | "
                 "georob/ref score, median per image | seconds | s/image | images/s | wall s | images/s (wall) "
                 "| speed vs reference (own time / wall) |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        g_ok = [r for r in res["georob"] if not r.get("skipped")]
        ncom = g_ok[0]["n_common"] if g_ok else None
        refcom = g_ok[0]["ref_median_score_common"] if g_ok else float("nan")
        to = (f" ({ref['n_timeout']} timeouts)" if ref["n_timeout"] else "") + \
             (f" ({ref['n_error']} errors)" if ref.get("n_error") else "")
        L.append(f"| reference | {ref['n_attacked']}/{ref['n_total']}{to} | {fmt(ref['success_rate'], '.4f')} | "
                 f"{fmt(refcom, '.4f')}{f' ({ncom})' if ncom is not None else ''} | {fmt(ref['median_score_own'], '.4f')} "
                 f"| 1 | {ref['seconds']:.3f} | {fmt(ref['seconds'] / ref['n_attacked'] if ref['n_attacked'] else float('nan'), '.4f')} "
                 f"| {fmt(ref['images_per_s'], '.3f')} | – | – | 1 |")
        for r in res["georob"]:
            if r.get("skipped"):
                L.append(f"| {r['tool']} | skipped: {r['skipped']} | | | | | | | | | | |")
                continue
            sp = (fmt(r["images_per_s"] / ref["images_per_s"], '.1f') + " / "
                  + fmt(r["images_per_s_wall"] / ref["images_per_s"], '.1f'))
            L.append(f"| {r['tool']} | {r['n_attacked']}/{r['n_total']} | {fmt(r['success_rate'], '.4f')} | "
                     f"{fmt(r['median_score_common'], '.4f')} ({r['n_common']}) | {fmt(r['median_score_own'], '.4f')} | "
                     f"{fmt(r['median_ratio_vs_ref'], '.3f')} | {r['seconds']:.3f} | "
                     f"{fmt(r['seconds'] / r['n_attacked'] if r['n_attacked'] else float('nan'), '.4f')} | "
                     f"{fmt(r['images_per_s'], '.2f')} | {r['wall_seconds']:.3f} | {fmt(r['images_per_s_wall'], '.2f')} | {sp} |")
        L.append("")
        notes = []
        for r in g_ok:
            parts = []
            if r["n_common"]:
                parts.append(f"lower score than the reference on {fmt(r['frac_lower_than_ref'], '.0%')} of the "
                             f"{r['n_common']} images both fool")
            else:
                parts.append("no image fooled by both tools")
            if np.isfinite(r["xcheck_median_rel_diff"]):
                parts.append(f"the reference's `geodesic_distance` on georob's transforms (moved to its centre) "
                             f"differs from georob's score by median {r['xcheck_median_rel_diff']:.2e}, max "
                             f"{r['xcheck_max_rel_diff']:.2e} (relative)")
            if not r["same_attacked_images"]:
                parts.append("NB: the attacked image sets differ")
            notes.append(f"{r['tool']}: " + "; ".join(parts))
        if not ref["recheck_all_fooled"]:
            notes.append("reference: some returned images are not misclassified on recheck")
        if res.get("scale_check") and not res["scale_check"].get("skipped"):
            sc = res["scale_check"]
            notes.append(f"scale check, reference on image #{sc['index']}: score {sc['score_scale_255']:.6f} at pixels ×255 "
                         f"vs {sc['score_scale_1']:.6f} at ×1 (relative difference {sc['rel_diff']:.1e})")
        L += [f"- {n}" for n in notes]
        L.append("")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="the reference: a checkout of moosavism/ManiFool or a bare/mirror git dir")
    ap.add_argument("--georob", default=str(ROOT / "target" / "release" / "georob"), help="the georob binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/peer")
    ap.add_argument("--which", choices=["digits", "effnet", "both"], default="both")
    ap.add_argument("--groups", default="affine,similarity", help="comma-separated: affine, similarity")
    ap.add_argument("--limit", type=int, default=None,
                    help="only the first N images (before dropping misclassified ones; passed to georob as --limit); "
                         "default: digits 100, EfficientNet all 5 photos")
    ap.add_argument("--candidates", type=int, default=None,
                    help="N_c = georob candidates (default: digits 9 = every other class, EfficientNet 10)")
    ap.add_argument("--max-iter", type=int, default=100, help="reference maxIter (per target) = georob max_iter")
    ap.add_argument("--effnet-max-iter", type=int, default=None,
                    help="EfficientNet only (default --max-iter); the reference needs ~5-10 s per iteration there "
                         "on 2 busy cores, up to N_c x maxIter iterations per image")
    ap.add_argument("--search", choices=["per_class", "joint"], default="per_class",
                    help="georob's search: per_class (the paper's multiclass form, as the reference: one binary search "
                         "per candidate class, the smallest score kept; default) or joint (georob's default)")
    ap.add_argument("--numerical", action="store_true",
                    help="reference: finite-difference Jacobian (as the authors' demo scripts) instead of the analytic one")
    ap.add_argument("--ref-timeout", type=float, default=600.0,
                    help="stop a reference manifool() call after this many seconds (counted as a failure; 0 = never)")
    ap.add_argument("--georob-timeout", type=float, default=None, help="give up on a georob run after this many seconds")
    ap.add_argument("--no-scale-check", dest="scale_check", action="store_false",
                    help="skip re-running the first digits image at pixel scale 1")
    args = ap.parse_args()
    args.groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    for g in args.groups:
        if g not in ("affine", "similarity"):
            raise SystemExit(f"--groups: {g!r} is not affine or similarity")
    args.limit_for = None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="manifool_ref_"))
    try:
        prov = export_reference(Path(args.ref).resolve(), tmp)
        refmf, refgeo = import_reference(tmp)
        mm = make_models_module(args.threads)
        results = []
        if args.which in ("digits", "both"):
            results += do_digits(args, mm, refmf, refgeo, out)
        if args.which in ("effnet", "both"):
            results += do_effnet(args, mm, refmf, refgeo, out)
        mach = machine(args, prov)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    md = report(results, mach, args)
    write_report(out, "peer_manifool", md, mach, results)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""georob's corruptions against the reference implementation, `imagecorruptions` (Michaelis et
al., after Hendrycks & Dietterich's make_imagenet_c.py), on the bundled photos at every severity.

    .venv/bin/pip install "setuptools<70" imagecorruptions
    cargo build --release
    .venv/bin/python scripts/peer_corruptions.py [--georob target/release/georob] [--only fog,snow] [--repeats 4]

(the figures in docs/methods.md: --repeats 4, and --only fog --repeats 16)

The photos are decoded once with Pillow and written as PNG, so both sides start from the same
pixels (georob's JPEG decoder and libjpeg-turbo may differ by a grey level); `georob corrupt`
runs on those PNGs (seeds 0..R-1, R = --repeats, for the random corruptions; 0 for the others)
and `imagecorruptions.corrupt` on the same arrays (NumPy seeded with 1000 r + the image's index).
  deterministic corruptions: the largest per-pixel difference in grey levels and the lowest
      PSNR over the photos, per severity (motion blur at georob's angle, found by search:
      both sides draw it at random);
  random ones (fog and frost included: a plasma fractal, a crop of a frost photo): statistics
      of the change `corrupted - clean` pooled over the photos and repeats — mean shift,
      standard deviation, fraction of values changed — for both; the worst difference is
      |georob - reference| / reference for the standard deviation and the fraction, and for the
      mean shift |georob - reference| / max(|reference|, the reference's standard deviation) (a
      mean shift near 0 has no meaningful ratio). Fog's plasma fractal is dominated by a few random low
      frequencies, so its statistics vary by several per cent between draws: use --repeats.

Patches imagecorruptions 1.1.2 needs on NumPy 2 and scikit-image >= 0.19 (applied here by
monkeypatching, nothing installed is changed):
  fog            uses `np.float_`, removed in NumPy 2.0            -> np.float_ = np.float64
  gaussian_blur, glass_blur
                 call skimage.filters.gaussian(..., multichannel=True), an argument removed
                 in scikit-image 0.19                               -> channel_axis=-1
`import imagecorruptions` also needs pkg_resources, which setuptools >= 70 no longer ships
(hence the pinned install above).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "onnx_models" / "efficientnet_lite0" / "photos"
# Deterministic given their parameters; motion blur's angle is random in both and is matched
# (motion_at_georobs_angle).
DETERMINISTIC = [
    "defocus_blur", "motion_blur", "zoom_blur", "brightness", "contrast", "pixelate",
    "jpeg_compression", "gaussian_blur", "saturate",
]


def patched_imagecorruptions():
    """imports imagecorruptions with the NumPy 2 / scikit-image patches applied."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    import imagecorruptions
    from imagecorruptions import corruptions as ic
    from skimage.filters import gaussian

    def gaussian_compat(image, sigma=1, multichannel=None, **kw):
        if multichannel:
            kw["channel_axis"] = -1
        return gaussian(image, sigma=sigma, **kw)

    ic.gaussian = gaussian_compat
    return imagecorruptions


def motion_at_georobs_angle(ic, x: np.ndarray, ours: np.ndarray, severity: int) -> np.ndarray:
    """The reference's motion blur (its `_motion_blur`) at the angle that best reproduces georob's
    image. Both draw the angle uniformly in +-45 degrees, from different random streams; the
    blur itself is deterministic. The angle is searched on a 128x128 centre crop (0.1 degree
    steps, then 0.002 around the best), judged on the crop's centre, which no edge reaches."""
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    cy, cx = x.shape[0] // 2, x.shape[1] // 2
    crop = x[cy - 64:cy + 64, cx - 64:cx + 64]
    target = ours[cy - 64:cy + 64, cx - 64:cx + 64][44:84, 44:84].astype(int)

    def blur(image, angle):
        return np.uint8(np.clip(ic.corruptions._motion_blur(image, radius=radius, sigma=sigma, angle=angle), 0, 255))

    def err(angle):
        return np.abs(blur(crop, angle)[44:84, 44:84].astype(int) - target).mean()

    best = min(np.arange(-45, 45, 0.1), key=err)
    best = min(np.arange(best - 0.1, best + 0.1, 0.002), key=err)
    return blur(x, best)


def change_stats(clean: list[np.ndarray], out: list[np.ndarray]) -> tuple[float, float, float]:
    d = np.concatenate([(o.astype(np.float64) - c.astype(np.float64)).ravel() for c, o in zip(clean, out)])
    return float(d.mean()), float(d.std()), float(np.mean(d != 0))


def rel(a: float, b: float, scale: float | None = None) -> float:
    """|a - b| relative to |b|, or to `scale` when given."""
    return abs(a - b) / max(abs(b) if scale is None else scale, 1e-12)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--georob", default=str(ROOT / "target" / "release" / "georob"), help="the georob binary")
    ap.add_argument("--only", help="comma-separated corruption names")
    ap.add_argument("--repeats", type=int, default=1, help="draws per photo of the random corruptions")
    args = ap.parse_args()
    ic = patched_imagecorruptions()
    names = args.only.split(",") if args.only else ic.get_corruption_names("all")

    work = Path(tempfile.mkdtemp(prefix="georob-peer-corruptions-"))
    pngs = work / "photos"
    files = sorted(p for p in PHOTOS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    clean = []
    for f in files:
        target = pngs / f.relative_to(PHOTOS).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        rgb = Image.open(f).convert("RGB")
        rgb.save(target)
        clean.append((target.relative_to(pngs), np.array(rgb)))
    def repeats(name: str) -> range:
        return range(1 if name in DETERMINISTIC else args.repeats)

    def out(r: int) -> Path:
        return work / f"georob-seed{r}"

    for name in names:
        for r in repeats(name):
            subprocess.run([args.georob, "corrupt", str(pngs), "--corruption", name, "--severity", "all",
                            "--out", str(out(r)), "--seed", str(r), "-q"], check=True)

    print(f"{len(clean)} photos ({', '.join(f'{x.shape[1]}x{x.shape[0]}' for _, x in clean)}), severities 1-5, "
          f"{args.repeats} draw(s) per photo of the random corruptions\n")
    print("| corruption | kind | per severity 1..5 | worst | target met |")
    print("|---|---|---|---|---|")
    for name in names:
        ref_all, ours_all = [], []
        for s in range(1, 6):
            refs, ours = [], []
            for r in repeats(name):
                for i, (rel_path, x) in enumerate(clean):
                    ours.append(np.array(Image.open(out(r) / name / str(s) / rel_path).convert("RGB")))
                    np.random.seed(1000 * r + i)
                    if name == "motion_blur":
                        refs.append(motion_at_georobs_angle(ic, x, ours[-1], s))
                    else:
                        refs.append(np.uint8(ic.corrupt(x, corruption_name=name, severity=s)))
            ref_all.append(refs)
            ours_all.append(ours)
        if name in DETERMINISTIC:
            cells, worst_diff, worst_psnr = [], 0, np.inf
            for refs, ours in zip(ref_all, ours_all):
                diff = max(int(np.abs(r.astype(int) - o.astype(int)).max()) for r, o in zip(refs, ours))
                mse = [np.mean((r.astype(float) - o.astype(float)) ** 2) for r, o in zip(refs, ours)]
                psnr = min(np.inf if m == 0 else 10 * np.log10(255**2 / m) for m in mse)
                cells.append(f"{diff} / {psnr:.1f}")
                worst_diff, worst_psnr = max(worst_diff, diff), min(worst_psnr, psnr)
            ok = worst_diff <= 2 or worst_psnr >= 35
            print(f"| {name} | max diff / min PSNR dB | {'; '.join(cells)} | {worst_diff} / {worst_psnr:.1f} | {'yes' if ok else 'NO'} |")
        else:
            cells, worst = [], 0.0
            xs = [x for _, x in clean] * len(repeats(name))
            for refs, ours in zip(ref_all, ours_all):
                r, o = change_stats(xs, refs), change_stats(xs, ours)
                d = (rel(o[0], r[0], scale=max(abs(r[0]), r[1])), rel(o[1], r[1]), rel(o[2], r[2]))
                worst = max(worst, *d)
                cells.append(f"{o[0]:+.1f}/{r[0]:+.1f}, {o[1]:.1f}/{r[1]:.1f}, {o[2]:.3f}/{r[2]:.3f}")
            print(f"| {name} | mean shift, std, fraction changed: georob/reference | {'; '.join(cells)} | {100 * worst:.1f} % | {'yes' if worst <= 0.05 else 'NO'} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

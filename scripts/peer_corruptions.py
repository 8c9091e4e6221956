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
and `imagecorruptions.corrupt` on the same arrays, NumPy seeded with georob's seed for that image
(`np.random.seed(s)` where georob draws from NumPy's stream seeded with `s`: the run seed mixed
with the image's position, folded to 32 bits; `numpy_seed` below), so that both draw the same
numbers.
  deterministic corruptions: the largest per-pixel difference in grey levels and the lowest
      PSNR over the photos, per severity;
  random ones with the reference's draws (every one but frost; impulse noise with the patch
      below): the same figures as the deterministic ones;
  frost (a procedural texture, not the reference's photos): statistics
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
and one that seeds it: impulse_noise calls skimage.util.random_noise without a seed, so that
scikit-image draws from an unseeded generator        -> rng = the seed NumPy was given
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
# Deterministic given their parameters.
DETERMINISTIC = [
    "defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression",
    "gaussian_blur", "saturate",
]
# Random, but drawn from the stream georob shares with NumPy: compared pixel for pixel.
SAME_DRAWS = [
    "motion_blur", "gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "snow", "fog",
    "elastic_transform", "speckle_noise", "spatter",
]
MASK64 = (1 << 64) - 1


def splitmix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def numpy_seed(seed: int, position: int) -> int:
    """The NumPy seed georob's corruptions draw from for the image at `position` of a data set
    and run seed `seed` (`georob::measure::item_seed`, folded to 32 bits as `corrupt::stream::fold`)."""
    s = splitmix(seed ^ splitmix(position + 1))
    return (s ^ (s >> 32)) & 0xFFFFFFFF


# The seed `seed_numpy` last gave, which impulse noise's scikit-image generator takes.
SEED = [0]


def seed_numpy(seed: int) -> None:
    """Seeds what the reference draws from as georob seeds an image: NumPy's legacy stream
    (`np.random.seed`), and the generator scikit-image's `random_noise` makes for impulse noise
    (`np.random.default_rng(seed)`: the reference passes no seed, the patch below passes this)."""
    np.random.seed(seed)
    SEED[0] = seed


def patched_imagecorruptions():
    """imports imagecorruptions with the NumPy 2 / scikit-image patches applied, and impulse
    noise's generator seeded by `seed_numpy`."""
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    import imagecorruptions
    import skimage.util
    from imagecorruptions import corruptions as ic
    from skimage.filters import gaussian

    random_noise = skimage.util.random_noise

    def seeded_random_noise(image, mode="gaussian", rng=None, **kw):
        return random_noise(image, mode=mode, rng=SEED[0] if rng is None else rng, **kw)

    ic.sk.util.random_noise = seeded_random_noise

    def gaussian_compat(image, sigma=1, multichannel=None, **kw):
        if multichannel:
            kw["channel_axis"] = -1
        return gaussian(image, sigma=sigma, **kw)

    ic.gaussian = gaussian_compat
    return imagecorruptions


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
                    seed_numpy(numpy_seed(r, i))
                    refs.append(np.uint8(ic.corrupt(x, corruption_name=name, severity=s)))
            ref_all.append(refs)
            ours_all.append(ours)
        if name in DETERMINISTIC or name in SAME_DRAWS:
            cells, worst_diff, worst_psnr = [], 0, np.inf
            for refs, ours in zip(ref_all, ours_all):
                diff = max(int(np.abs(r.astype(int) - o.astype(int)).max()) for r, o in zip(refs, ours))
                mse = [np.mean((r.astype(float) - o.astype(float)) ** 2) for r, o in zip(refs, ours)]
                psnr = min(np.inf if m == 0 else 10 * np.log10(255**2 / m) for m in mse)
                cells.append(f"{diff} / {psnr:.1f}")
                worst_diff, worst_psnr = max(worst_diff, diff), min(worst_psnr, psnr)
            ok = worst_diff <= 2 or worst_psnr >= 35
            kind = "max diff / min PSNR dB" + ("" if name in DETERMINISTIC else ", same draws")
            print(f"| {name} | {kind} | {'; '.join(cells)} | {worst_diff} / {worst_psnr:.1f} | {'yes' if ok else 'NO'} |")
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

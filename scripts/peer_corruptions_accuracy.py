#!/usr/bin/env python3
"""Accuracy under corruption, georob against a Python pipeline (`imagecorruptions` + onnxruntime),
on EfficientNet-Lite0 (fp32) and the bundled photos, per corruption and severity, and the speed
of both (corrupting and evaluating, images per second).

    .venv/bin/pip install "setuptools<70" imagecorruptions onnxruntime
    cargo build --release
    .venv/bin/python scripts/peer_corruptions_accuracy.py [--georob target/release/georob] [--backend tract,ort]
        [--threads 2] [--copies 4] [--rounds 3]

The photos are resized once by Pillow to the model's 224x224 and written as PNG (--copies
copies of each, to time more than 5 images), so both pipelines start from the same pixels:
georob reads them at the model's size and does not resize. georob runs `georob measure
corruptions` (seed 0, --backend, --threads); the Python pipeline runs `imagecorruptions.corrupt` on
each image (NumPy seeded per image and cell) and onnxruntime (intra-op threads = --threads) on
each cell's batch, with the model's normalisation (mean .498, std .502, NCHW).

Deterministic corruptions (see scripts/peer_corruptions.py) give the same pixels within a grey
level, and so do the random ones that both draw from NumPy's stream: the Python pipeline seeds
NumPy with georob's seed for each image (`numpy_seed`), so their accuracies should agree within
one image per cell (impulse noise too: the patched reference seeds scikit-image's generator
with the same seed, see scripts/peer_corruptions.py). Frost (georob's procedural texture)
agrees only in distribution. The table says which is which.
The timings are wall-clock seconds of the whole `georob measure` process (starting, loading
the model and its checks included) and of the Python loop (the session made and the photos
decoded before it starts), split into model calls (georob's `timings.model_seconds`, summed over
the threads that made them, divided by --threads: each thread takes a group of images through
every cell, so the calls of the threads run side by side; the Python
loop's `session.run` calls) and the rest: corrupting, decoding and bookkeeping; and, like for
like with the Python loop, georob's measure alone (`timings.seconds`: from the data set opened
and the model loaded to the result, the photos' decoding included).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_corruptions import DETERMINISTIC, PHOTOS, ROOT, SAME_DRAWS, numpy_seed, patched_imagecorruptions, seed_numpy  # noqa: E402

MODEL = ROOT / "onnx_models" / "efficientnet_lite0" / "efficientnet_lite0.onnx"
IMAGENET_C = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
]


def photos(out: Path, copies: int) -> tuple[list[np.ndarray], list[int]]:
    """The bundled photos at 224x224 as PNGs under `out/LABEL/`, and as arrays with labels."""
    images, labels = [], []
    for f in sorted(p for p in PHOTOS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        rgb = Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)
        label = int(f.parent.name)
        for k in range(copies):
            target = out / f.parent.name / f"{f.stem}_{k}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            rgb.save(target)
            images.append(np.array(rgb))
            labels.append(label)
    return images, labels


def python_pipeline(ic, images, labels, names, threads: int) -> tuple[dict, float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL), so, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    accuracy = {}
    model_s = 0.0
    t0 = time.perf_counter()
    for name in names:
        for s in range(1, 6):
            batch = []
            for i, x in enumerate(images):
                seed_numpy(numpy_seed(0, i))
                batch.append(np.uint8(ic.corrupt(x, corruption_name=name, severity=s)))
            u = np.stack(batch).astype(np.float32) / 255.0
            u = ((u - 0.498) / 0.502).transpose(0, 3, 1, 2)
            t1 = time.perf_counter()
            preds = session.run(None, {feed: np.ascontiguousarray(u)})[0].argmax(axis=1)
            model_s += time.perf_counter() - t1
            accuracy[(name, s)] = int(np.sum(preds == np.array(labels)))
    return accuracy, time.perf_counter() - t0, model_s


def georob_pipeline(binary: str, backend: str, data: Path, names, threads: int, work: Path) -> tuple[dict, float]:
    out = work / "georob.json"
    t0 = time.perf_counter()
    subprocess.run([binary, "measure", "corruptions", str(MODEL), str(data), "-q", "--seed", "0",
                    "--backend", backend, "--threads", str(threads), "--json", str(out),
                    "-p", "corruptions=" + json.dumps(names)], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    result = json.loads(out.read_text())
    n = len(result["images"])
    accuracy = {(c, s): round(result["summary"][f"accuracy_{c}_{s}"] * n) for c in names for s in range(1, 6)}
    model_s = result["timings"]["model_seconds"] / threads
    return accuracy, seconds, model_s, result["timings"]["seconds"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--georob", default=str(ROOT / "target" / "release" / "georob"), help="the georob binary")
    ap.add_argument("--backend", default="tract",
                    help="georob's backends, comma-separated: tract, ort (with ORT_DYLIB_PATH); the first gives the table")
    ap.add_argument("--threads", type=int, default=2, help="threads of both pipelines")
    ap.add_argument("--copies", type=int, default=1, help="copies of each photo (for timing)")
    ap.add_argument("--only", help="comma-separated corruption names (default: the 15 of ImageNet-C)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each pipeline, in turns; the timings are each pipeline's median run "
                         "(the accuracies are the first round's)")
    args = ap.parse_args()
    ic = patched_imagecorruptions()
    names = args.only.split(",") if args.only else IMAGENET_C
    work = Path(tempfile.mkdtemp(prefix="georob-peer-accuracy-"))
    images, labels = photos(work / "photos", args.copies)
    backends = args.backend.split(",")
    rounds = []
    for _ in range(max(args.rounds, 1)):
        georob = [georob_pipeline(args.georob, b, work / "photos", names, args.threads, work) for b in backends]
        rounds.append((georob, python_pipeline(ic, images, labels, names, args.threads)))

    def median(runs):
        return sorted(runs, key=lambda r: r[1])[len(runs) // 2]

    runs = [median([r[0][i] for r in rounds]) for i in range(len(backends))]
    ours = rounds[0][0][0][0]
    theirs = rounds[0][1][0]
    _, python_s, python_model_s = median([r[1] for r in rounds])
    n = len(images)
    print(f"{n} images (224x224), {len(names)} corruptions x 5 severities, {args.threads} threads, "
          f"median of {len(rounds)} run(s) per pipeline\n")
    print("| corruption | kind | correct, georob / Python, severities 1..5 | largest difference |")
    print("|---|---|---|---|")
    worst = {"deterministic": 0, "same draws": 0, "random": 0}
    for c in names:
        kind = "deterministic" if c in DETERMINISTIC else "same draws" if c in SAME_DRAWS else "random"
        diffs = [abs(ours[(c, s)] - theirs[(c, s)]) for s in range(1, 6)]
        worst[kind] = max(worst[kind], max(diffs))
        cells = " ".join(f"{ours[(c, s)]}/{theirs[(c, s)]}" for s in range(1, 6))
        print(f"| {c} | {kind} | {cells} | {max(diffs)} |")
    cells = n * len(names) * 5
    print(f"\nlargest difference per cell: deterministic {worst['deterministic']} image(s), "
          f"same draws {worst['same draws']}, random {worst['random']}, of {n}")
    print("\n| pipeline | seconds | images/s | of which model calls (s) | corrupting and the rest (s) "
          "| the measure alone (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for b, (_, georob_s, model_s, measure_s) in zip(backends, runs):
        print(f"| georob ({b}) | {georob_s:.1f} | {cells / georob_s:.1f} ({python_s / georob_s:.1f}x) "
              f"| {model_s:.1f} | {georob_s - model_s:.1f} ({(python_s - python_model_s) / (georob_s - model_s):.1f}x) "
              f"| {measure_s:.1f} ({python_s / measure_s:.1f}x) |")
    print(f"| imagecorruptions + onnxruntime | {python_s:.1f} | {cells / python_s:.1f} | {python_model_s:.1f} "
          f"| {python_s - python_model_s:.1f} | {python_s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

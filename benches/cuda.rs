//! The ort CUDA path (`--device cuda`): EfficientNet-Lite0 at batch 64, forward, gradients
//! (M = 1 and 10) and DeepFool images/s, next to PyTorch on CUDA when `GEOROB_BENCH_TORCH`
//! names a Python with torch (CUDA) and the EfficientNet-Lite0 packages. Not a test.
//!
//! ```text
//! ORT_DYLIB_PATH=/path/to/onnxruntime-gpu/capi/libonnxruntime.so.1.x \
//!   GEOROB_BENCH_TORCH=python3 cargo bench --bench cuda
//! ```
//!
//! Without ONNX Runtime, a CUDA-enabled ONNX Runtime or a GPU it prints `SKIPPED cuda: <why>`
//! and exits 0. Timing as in the other benches (median of 3–9 samples after a warm-up call).

mod common;

use std::time::Instant;

use common::{cycle_rows, machine, median_ms, npy, root};
use georob::data::Dataset;
use georob::measure::{build, Context};
use georob::model::{BackendChoice, BackendKind, Device, GradientChoice, Model, ModelOptions};
use georob::progress::Progress;
use georob::resources::Files;

const BATCH: usize = 64;

/// The bundled photos (model space), repeated to `n` rows, and their shape.
fn photos(n: usize) -> (Vec<usize>, Vec<f32>) {
    let (shape, data) = npy(&root().join("onnx_models/efficientnet_lite0/photos_x.npy"));
    let x = cycle_rows(&shape, &data, n);
    let mut out_shape = shape;
    out_shape[0] = n;
    (out_shape, x)
}

fn skip(why: impl std::fmt::Display) {
    println!("SKIPPED cuda: {why}");
}

fn main() {
    if let Err(e) = georob::model::ort_lib::find(None) {
        return skip(e);
    }
    let options = ModelOptions {
        backend: BackendChoice::Exactly(BackendKind::Ort),
        device: Device::Cuda,
        gradient: GradientChoice::Exact,
        batch: Some(BATCH),
        ..Default::default()
    };
    let path = root().join("onnx_models/efficientnet_lite0/efficientnet_lite0.onnx");
    let model = match Model::open(&path, &options) {
        Ok(m) => m,
        Err(e) => return skip(e),
    };
    let (shape, x) = photos(BATCH);
    if let Err(e) = model.logits(&x, BATCH) {
        return skip(format!("the first CUDA run failed: {e}"));
    }
    let k = model.classes;
    let cot = |m: usize| -> Vec<f32> {
        (0..BATCH * m * k)
            .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 504.0)
            .collect()
    };
    let forward = median_ms(20.0, || {
        model.logits(&x, BATCH).unwrap();
    });
    let grads: Vec<(usize, f64)> = [1, 10]
        .into_iter()
        .map(|m| {
            let c = cot(m);
            (
                m,
                median_ms(0.0, || drop(model.vjp(&x, BATCH, &c, m).unwrap())),
            )
        })
        .collect();
    // DeepFool (defaults) on the photos repeated to the batch, written as a .npy data set.
    let dir = std::env::temp_dir().join(format!("georob-cuda-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let npy = dir.join("photos64.npy");
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    {
        use npyz::WriterBuilder;
        let file = std::io::BufWriter::new(std::fs::File::create(&npy).unwrap());
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&dims)
            .writer(file)
            .begin_nd()
            .unwrap();
        w.extend(x.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    let data = Dataset::open(&npy, None).unwrap();
    let progress = Progress::hidden();
    let files = Files {
        options: model.options().clone(),
    };
    let ctx = Context {
        model: &model,
        data: &data,
        seed: 0,
        bounds: None,
        progress: &progress,
        out_dir: None,
        resources: &files,
    };
    let t0 = Instant::now();
    let deepfool = build("deepfool", &serde_json::json!({}))
        .unwrap()
        .run(&ctx)
        .unwrap();
    let deepfool_s = t0.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir).ok();

    println!(
        "EfficientNet-Lite0 224×224 on {}, batch {BATCH}; host {}\n",
        model.backend().describe(),
        machine()
    );
    println!("| what | ms per call | images/s |");
    println!("|---|---:|---:|");
    println!(
        "| forward | {forward:.1} | {:.0} |",
        BATCH as f64 / forward * 1e3
    );
    for (m, t) in grads {
        println!(
            "| gradient M={m} | {t:.1} | {:.0} |",
            BATCH as f64 / t * 1e3
        );
    }
    println!(
        "| DeepFool (defaults, {} images attacked, success {:.2}) | {:.0} (whole run) | {:.1} |",
        deepfool.counts.fooled + deepfool.counts.failed,
        deepfool
            .summary
            .get("success_rate")
            .copied()
            .unwrap_or(f64::NAN),
        deepfool_s * 1e3,
        BATCH as f64 / deepfool_s
    );
    if let Ok(python) = std::env::var("GEOROB_BENCH_TORCH") {
        let out = std::process::Command::new(python)
            .arg(root().join("scripts/bench_torch_grad.py"))
            .args(["--device", "cuda", "--batches", &BATCH.to_string()])
            .output();
        match out {
            Ok(o) if o.status.success() => println!("\n{}", String::from_utf8_lossy(&o.stdout)),
            Ok(o) => println!(
                "\nPyTorch CUDA: failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => println!("\nPyTorch CUDA: cannot run: {e}"),
        }
    }
}

//! Classify one image with a bundled model through the library API.
//!
//! ```text
//! cargo run --release --example classify -- [MODEL] [IMAGE]
//! ```
//! Defaults: EfficientNet-Lite0 on the bundled cat photo.

use std::path::PathBuf;

use georob::data::read_image_space;
use georob::logits::{softmax_at, top_k};
use georob::model::{Model, ModelOptions};
use georob::preprocess::to_model_space;

fn main() -> Result<(), georob::Error> {
    let mut args = std::env::args().skip(1);
    let model_path = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "onnx_models/efficientnet_lite0/efficientnet_lite0.onnx".into()),
    );
    let image_path = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "onnx_models/efficientnet_lite0/photos/285/chelsea.jpg".into()),
    );
    // The sidecar beside the model says how to preprocess; the backend is
    // ONNX Runtime when its library is found, else tract.
    let model = Model::open(&model_path, &ModelOptions::default())?;
    let d = model.spec.sample_len();
    let mut pixels = vec![0.0; d];
    read_image_space(&image_path, &model.spec, &mut pixels)?;
    let mut x = vec![0.0; d];
    to_model_space(&model.spec, &pixels, &mut x);
    let logits = model.logits(&x, 1)?;
    println!(
        "{} on {} ({})",
        model_path.display(),
        image_path.display(),
        model.backend().describe()
    );
    for class in top_k(&logits, 5) {
        let name = model.class_names.as_ref().map_or("", |n| n[class].as_str());
        println!(
            "{class:>5} {:6.2}% {name}",
            100.0 * softmax_at(&logits, class)
        );
    }
    Ok(())
}

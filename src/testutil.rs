//! Fixtures of the library's unit tests.

use std::path::Path;

use crate::data::Dataset;
use crate::model::{BackendChoice, BackendKind, Model, ModelOptions};
use crate::spec::{Channels, InputSpec, Layout, OutputKind};

/// The digits CNN on tract (`threads`, default all) and its first `images` test images.
pub(crate) fn digits_on_tract(images: usize, threads: Option<usize>) -> (Model, Dataset) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx_models/digits");
    let options = ModelOptions {
        backend: BackendChoice::Exactly(BackendKind::Tract),
        threads,
        ..Default::default()
    };
    let model = Model::open(&root.join("digits_cnn.onnx"), &options).unwrap();
    let mut data = Dataset::open(&root.join("test_x.npy"), None).unwrap();
    data.items.truncate(images);
    (model, data)
}

/// The first `images` digits test images with their labels.
pub(crate) fn labelled_digits(images: usize) -> Dataset {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx_models/digits");
    let mut data = Dataset::open(&root.join("test_x.npy"), Some(&root.join("test_y.npy"))).unwrap();
    data.items.truncate(images);
    data
}

/// An input spec of `h × w` pixels with mean 0.5 and std 0.25 on every channel.
pub(crate) fn spec(layout: Layout, channels: Channels, h: usize, w: usize) -> InputSpec {
    InputSpec {
        layout,
        height: h,
        width: w,
        channels,
        scale: 1.0,
        mean: vec![0.5; channels.count()],
        std: vec![0.25; channels.count()],
        output: OutputKind::Logits,
    }
}

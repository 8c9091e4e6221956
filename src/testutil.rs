//! Fixtures of the library's unit tests.

use std::path::Path;

use crate::data::Dataset;
use crate::model::{BackendChoice, BackendKind, Model, ModelOptions};

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

//! georob: audit how robust an exported ONNX image classifier is.

pub mod grad;

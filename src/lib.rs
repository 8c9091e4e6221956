//! georob: audit how robust an exported ONNX image classifier is to small
//! changes of its input.
//!
//! Data flows one way: [`data`] loads inputs, [`preprocess`] takes them to
//! model space (and gradients back), [`model`] runs them on a backend (tract or
//! ONNX Runtime) and takes input gradients ([`grad`]), [`measure`] turns model
//! calls into robustness results with the kernels of [`attack`], [`audit`] runs
//! suites of measures over models, [`gate`] checks them against thresholds and
//! baselines, and [`report`] renders the files people and CI systems read. [`corrupt`]
//! makes the natural corruptions (noise, blur, weather, digital) of ImageNet-C.
//!
//! ```no_run
//! use georob::{data::Dataset, model::{Model, ModelOptions}};
//! let model = Model::open("onnx_models/digits/digits_cnn.onnx".as_ref(), &ModelOptions::default())?;
//! let data = Dataset::open("onnx_models/digits/test".as_ref(), None)?;
//! let report = georob::eval::evaluate(&model, &data, &georob::progress::Progress::hidden())?;
//! println!("top-1 {:?}", report.summary.top1);
//! # Ok::<(), georob::Error>(())
//! ```
#![warn(missing_docs)]

pub mod attack;
pub mod audit;
pub mod bound;
pub mod corrupt;
pub mod data;
pub mod error;
pub mod eval;
pub mod gate;
pub mod grad;
pub mod limits;
pub mod logits;
pub mod measure;
pub mod model;
pub mod preprocess;
pub mod progress;
pub mod read;
pub mod report;
pub mod resources;
pub mod spec;
pub mod suite;
#[cfg(test)]
mod testutil;
pub mod threads;
pub mod write;

pub use error::{Error, Result};

//! The integration tests, one test binary: each module was a test file of its own (a binary
//! to link per file), and all share the helpers of `common`. Run one module with
//! `cargo test --test it <module>::`.

mod common;

mod additive;
mod architecture;
mod audit;
mod backends;
mod bad_input;
mod certify;
mod certify_random;
mod cli;
mod cli_grad;
mod corrupt;
mod deepfool;
mod fuzz;
mod geometric;
mod grad_fallback;
mod grad_models;
mod grad_ort;
mod grad_reference;
mod hostile;
mod model_gradients;
mod robust_accuracy;
mod stability;
mod threads;

//! Attack kernels that several measures share: the DeepFool solver and the vector helpers
//! (top class, ℓp norms). A measure turns their answers into per-image results.

pub mod deepfool;
pub mod vector;

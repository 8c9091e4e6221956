//! Attack kernels that several measures share: the DeepFool solver, APGD and Square Attack,
//! and the vector helpers (top class, ℓp norms). A measure turns their answers into per-image results.

pub mod apgd;
pub mod deepfool;
pub mod square;
pub mod vector;

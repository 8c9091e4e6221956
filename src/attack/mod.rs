//! Attack kernels that several measures share: the DeepFool solver, the boundary refinement of
//! what it finds, APGD and Square Attack, and the vector helpers (top class, ℓp norms). A
//! measure turns their answers into per-image results.

pub mod apgd;
pub mod deepfool;
pub mod refine;
pub mod square;
pub mod vector;

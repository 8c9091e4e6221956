//! Differentiable image warps with analytic Jacobians (work in progress).

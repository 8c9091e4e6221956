//! The crate's error type.

use thiserror::Error;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when building or applying a warp.
///
/// Messages are lowercase and name the quantity and the sizes involved.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer does not have the number of values its shape asks for.
    #[error("{what} has {got} values, its shape {shape} needs {expected}")]
    DataLength {
        /// Which buffer (e.g. "image batch", "cotangent", "flow").
        what: &'static str,
        /// The shape, written out (e.g. "(n=2, c=3, h=16, w=20)").
        shape: String,
        /// Number of values the shape needs.
        expected: usize,
        /// Number of values given.
        got: usize,
    },
    /// A parameter vector does not match the group's dimension.
    #[error("group {group} takes {expected} parameters per image, got {got} values")]
    ParamCount {
        /// Group name.
        group: &'static str,
        /// Parameters needed (per image, or `n × dim` for a batch).
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// The number of per-image warps is neither 1 (broadcast) nor the batch size.
    #[error("{what}: {got} warps for a batch of {batch} images (need 1 or {batch})")]
    WarpCount {
        /// Which warp.
        what: &'static str,
        /// Batch size.
        batch: usize,
        /// Warps given.
        got: usize,
    },
    /// A flow field's spatial size or batch size differs from the images'.
    #[error("flow of shape (n={flow_n}, h={flow_h}, w={flow_w}) does not fit images (n={n}, h={h}, w={w})")]
    FlowShape {
        /// Flow batch size.
        flow_n: usize,
        /// Flow height.
        flow_h: usize,
        /// Flow width.
        flow_w: usize,
        /// Image batch size.
        n: usize,
        /// Image height.
        h: usize,
        /// Image width.
        w: usize,
    },
    /// A name that is not one of the known transform groups.
    #[error("unknown transform group {0:?} (expected translation, rotation, rigid, similarity, affine or projective)")]
    UnknownGroup(String),
    /// A name that is not a known layout, interpolation or border mode.
    #[error("unknown {what} {name:?} (expected {expected})")]
    UnknownName {
        /// What was being parsed.
        what: &'static str,
        /// The name given.
        name: String,
        /// The accepted names.
        expected: &'static str,
    },
    /// An argument out of what a function accepts.
    #[error("{what} {value}: expected {expected}")]
    Invalid {
        /// What was given.
        what: &'static str,
        /// Its value, written out.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A transform matrix that cannot be inverted.
    #[error("transform matrix is singular")]
    Singular,
    /// A matrix without a real principal logarithm in the group.
    #[error("no principal logarithm in group {group}: {reason}")]
    Logarithm {
        /// Group name.
        group: &'static str,
        /// Why (e.g. "rotation of π", "matrix outside the group").
        reason: String,
    },
    /// A path discretisation that cannot be used (e.g. zero steps).
    #[error("invalid path steps: {0}")]
    PathSteps(String),
}

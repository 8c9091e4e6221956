//! Exact input gradients of ONNX classifiers, by differentiating the ONNX graph itself.
//!
//! # How the graph is built
//!
//! [`build_gradient_graph`] takes a classifier with one float input and a concrete input shape
//! (batch first, `(N, C, H, W)` or `(N, H, W, C)` …) and returns a new ONNX model that computes
//! the logits and `M` vector–Jacobian products per sample in one run:
//!
//! 1. **Analysis** (`path`): the logits are the first graph output, or the input of a final
//!    `Softmax`/`LogSoftmax` (possibly followed by Identity/Reshape/Flatten), in which case
//!    [`GradientGraph::pre_softmax`] is set. Tensors reachable from the input through float ops
//!    are *active*; shape/index subgraphs (`Shape`, `Gather` on shapes, `Range`, comparisons,
//!    integer casts, …) are not, and need no rule. The nodes with an active input whose output
//!    reaches the logits form the path; each needs a VJP rule.
//! 2. **Probe** (`probe`): one tract run of the original model at the concrete shape, with every
//!    node output exposed, gives each tensor's shape, type, and (for small or integer tensors)
//!    value — the constants of the backward pass (Reshape targets, Slice starts, axes, …).
//!    It is most of a build's time and does not depend on `M`: [`probe_model`] runs it once
//!    and [`build_gradient_graph_probed`] builds the graph of any `M` at that shape from it.
//! 3. **Batch axes**: each rule says where the batch axis of its outputs is (axis 0 for
//!    images, moved by Transpose/Reshape in attention blocks).
//! 4. **Reverse sweep**: in reverse graph order each rule (`rules/`, one file per family) emits
//!    standard `ai.onnx` nodes at the model's opset; cotangents meeting at a tensor are summed;
//!    broadcasting in the forward pass becomes `ReduceSum` + `Reshape`.
//! 5. **Folding** ([`fold_constants`]): nodes computed from a few constants alone (the static
//!    paddings exporters emit, small reshaped weights) become initializers, so that a backend
//!    does not fold them again in each session it opens.
//!
//! # Inputs and outputs
//!
//! The emitted model has inputs `input` (the concrete `input_shape`) and `cotangent`
//! `(N, M, K)`, outputs `logits` `(N, K)` and `grad` `(N, M, *input_shape[1..])` with
//! `grad[n, m] = Σ_k cotangent[n, m, k] · ∂logits[n, k]/∂input[n]`. The original weights stay
//! initializers (not copied); forward tensors named like these four are renamed.
//!
//! # Tiling of `M`
//!
//! The forward pass runs once on `N` rows. The backward pass runs on `M·N` rows laid out
//! m-major (`row = m·N + n`): the cotangent is transposed to `(M, N, K)` and flattened, forward
//! values a rule needs (ReLU masks, softmax outputs, MaxPool arg-max codes, …) are computed on
//! the `N` forward rows and `Tile`d `M` times along their batch axis, and the result is
//! reshaped to `(M, N, …)` and transposed to `(N, M, …)`. `M` as the outermost factor of the
//! batch axis survives reshapes that split or merge it (e.g. `(N·heads, L, d)`); where a
//! reshape merges the batch *under* another axis (PyTorch attention: `(L, N, E) → (L·N, E)`),
//! the batch axis is recorded with an outer factor and tiling inserts the copies there.
//!
//! That is [`CotangentLayout::Batched`], the default and ONNX Runtime's layout. With
//! [`CotangentLayout::Split`] (tract's, for large inputs) the reverse sweep instead runs `M`
//! times side by side, each pass on `N` rows from its own slice of the cotangent, and the
//! passes' inputs are concatenated to `(N, M, …)`; a common-subexpression pass then keeps the
//! local derivatives every pass emitted alike once.
//!
//! # Fallback
//!
//! [`ops_without_rule`] lists the nodes on the input→logits path without a VJP rule (custom
//! domains, `Resize` cubic, `Loop`, …); [`build_gradient_graph`] then fails with
//! [`GradError::MissingRules`] naming them, and callers fall back to finite differences
//! ([`fd`]). Forms a rule does not handle (a Conv whose weights depend on the input, pooling
//! along the batch axis, …) fail with [`GradError::Unsupported`] naming op and node — never a
//! silent zero.
//!
//! # Testing
//!
//! Unit tests beside each rule (`rules/*.rs`) check its family on tiny graphs against central
//! differences of the original graph on tract ([`fd`]), and `tests.rs` small networks of many
//! families; `tests/it/grad_reference.rs` checks the 104 PyTorch autograd references of
//! `onnx_models/grad/`; `tests/it/grad_models.rs` the bundled classifiers.
//! With `GRAD_DUMP=dir` the tests write each emitted graph and its tract results, which
//! `tests/data/grad/ort_check.py` replays on ONNX Runtime.
//!
//! Conventions at non-differentiable points: Relu and Clip pass the cotangent only where
//! `x > 0` / `min < x < max`; MaxPool sends it to the element its `Indices` output names;
//! ReduceMax/GlobalMaxPool/Max/Min split it evenly between tied maxima (ReduceMax, like
//! `torch.amax`) or give it to each tie (Max/Min).

mod builder;
pub mod check;
mod emit;
mod error;
pub mod fd;
pub(crate) mod fold;
pub(crate) mod onnx;
pub(crate) mod path;
pub(crate) mod probe;
mod rules;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use builder::{
    build_gradient_graph, build_gradient_graph_probed, probe_model, CotangentLayout, GradientGraph,
    ProbedShape, COTANGENT, GRAD, INPUT, LOGITS,
};
pub use error::{list as list_unsupported, GradError, UnsupportedNode};
pub use fold::fold_constants;
pub use path::ops_without_rule;

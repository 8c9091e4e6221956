//! Certified bounds from the ONNX graph: for every input in a set (an ℓ∞ or ℓ2 ball, a box,
//! or inputs linear in a few parameters), lower bounds on the logit margins `z_k0 − z_j`. A
//! margin bound above zero for every `j` proves that no input of the set changes the
//! prediction `k0`.
//!
//! # How
//!
//! 1. **Lowering** (`graph`): the nodes between the input and the logits (a final softmax
//!    left out, as for gradients) become [`graph::Op`]s with their constants read out; the
//!    shapes come from the same probe run the gradient builder uses. A model with a node
//!    without a bound rule fails with [`BoundError::MissingRules`] naming all of them.
//! 2. **Interval bounds** (`interval`, IBP): boxes pushed forward node by node.
//! 3. **Linear bounds** (`linear`, CROWN, Zhang et al. 2018): rows of coefficients pushed
//!    back from an objective to the input through each node, nonlinear nodes replaced by
//!    their linear relaxations (`relax`) on the bounds of their inputs, then minimised over
//!    the set in closed form. With [`Method::Crown`] the input of every nonlinear node is
//!    bounded that way first (in graph order, each from the relaxations before it), where
//!    that costs at most [`Options::budget`]; above it, and for every node with
//!    [`Method::Ibp`], the interval bounds serve.
//! 4. **Margins**: the rows `e_k0 − e_j` on the logits, folded into the last linear node, so
//!    both methods bound margins rather than logits one by one.
//!
//! # Floating point
//!
//! Interval bounds are computed in `f64` from the `f32` bounds of the node's inputs and
//! rounded outwards to `f32`, then widened by two more units in the last place ([`widen`]),
//! which covers the `f32` activation functions. Linear bounds take their coefficients from
//! `f32` matrix products (sums in `f64`): each intermediate bound they give moves outwards by
//! `1e-5·|v| + 1e-6`, and a margin counts as positive only above `1e-4·(1 + max|z|)` at the
//! clean input (see `measure::certify`), a documented margin for the rounding of the
//! coefficients rather than outward rounding.

mod conv;
pub mod graph;
pub mod interval;
pub mod linear;
pub mod relax;

use std::collections::HashMap;

pub use graph::BoundNet;
use graph::{chw, Op};
pub use interval::Interval;
use linear::{Relax, Rows};

use crate::grad::{GradError, UnsupportedNode};

/// Why a model cannot be bounded.
#[derive(Debug, thiserror::Error)]
pub enum BoundError {
    /// Nodes between the input and the logits without a bound rule.
    #[error("no bound rule for {} node(s) on the input→logits path: {}", .0.len(), crate::grad::list_unsupported(.0))]
    MissingRules(Vec<UnsupportedNode>),
    /// A node has a rule, but not for this form.
    #[error("unsupported form of {op} node `{node}` for bounds: {reason}")]
    Unsupported {
        /// Operator type.
        op: String,
        /// Node name.
        node: String,
        /// What is not supported.
        reason: String,
    },
    /// The model's structure (from the gradient builder's analysis and probe).
    #[error("{0}")]
    Model(String),
}

impl From<GradError> for BoundError {
    fn from(e: GradError) -> Self {
        BoundError::Model(e.to_string())
    }
}

/// Interval bounds alone, or linear bounds (CROWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Interval bound propagation.
    Ibp,
    /// Backward linear bound propagation.
    Crown,
}

/// The set of model inputs, in model space.
#[derive(Debug, Clone)]
pub enum InputSet {
    /// A box.
    Box(Interval),
    /// The ℓ2 ball `{center + s ⊙ δ : ‖δ‖₂ ≤ radius}` intersected with a box.
    L2 {
        /// Centre.
        center: Vec<f32>,
        /// Radius in the measured space.
        radius: f32,
        /// Per coordinate, model-space units per measured unit (the preprocessing's scale).
        scale: Vec<f32>,
        /// The box it is intersected with.
        clip: Interval,
    },
    /// Inputs linear in a few parameters, `{center + Σⱼ vⱼ·gens[j] + e : v ∈ [−1, 1]ᵖ,
    /// e ∈ err}`, intersected with a box (the pixels of warped images: transforms'
    /// `warp_linear_bounds`).
    Linear {
        /// The inputs at `v = 0`.
        center: Vec<f32>,
        /// Per parameter, the input's coefficients.
        gens: Vec<Vec<f32>>,
        /// The residual's box.
        err: Interval,
        /// The box it is intersected with (which interval bounds start from).
        clip: Interval,
    },
}

impl InputSet {
    /// A box containing the set.
    fn bounding_box(&self) -> Interval {
        match self {
            InputSet::Box(b) | InputSet::Linear { clip: b, .. } => b.clone(),
            InputSet::L2 {
                center,
                radius,
                scale,
                clip,
            } => Interval {
                lo: (0..center.len())
                    .map(|i| (center[i] - radius * scale[i]).max(clip.lo[i]))
                    .collect(),
                hi: (0..center.len())
                    .map(|i| (center[i] + radius * scale[i]).min(clip.hi[i]))
                    .collect(),
            },
        }
    }

    /// Per row, the minimum over the set of `Σ A·x + bias`.
    fn minimise(&self, rows: &Rows, dims: (usize, usize, usize)) -> Vec<f64> {
        let bx = self.bounding_box();
        let n = rows.n();
        let mut over_box = vec![0.0f64; n];
        rows.for_each(dims, |r, i, v| {
            over_box[r] += f64::from(v) * f64::from(if v >= 0.0 { bx.lo[i] } else { bx.hi[i] });
        });
        let best = match self {
            InputSet::Box(_) => over_box,
            InputSet::L2 {
                center,
                radius,
                scale,
                ..
            } => {
                let (mut at, mut sq) = (vec![0.0f64; n], vec![0.0f64; n]);
                rows.for_each(dims, |r, i, v| {
                    at[r] += f64::from(v) * f64::from(center[i]);
                    sq[r] += (f64::from(v) * f64::from(scale[i])).powi(2);
                });
                (0..n)
                    .map(|r| over_box[r].max(at[r] - f64::from(*radius) * sq[r].sqrt()))
                    .collect()
            }
            InputSet::Linear {
                center, gens, err, ..
            } => {
                let p = gens.len();
                let (mut at, mut coef) = (vec![0.0f64; n], vec![0.0f64; n * p]);
                rows.for_each(dims, |r, i, v| {
                    let e = if v >= 0.0 { err.lo[i] } else { err.hi[i] };
                    at[r] += f64::from(v) * (f64::from(center[i]) + f64::from(e));
                    for (j, g) in gens.iter().enumerate() {
                        coef[r * p + j] += f64::from(v) * f64::from(g[i]);
                    }
                });
                (0..n)
                    .map(|r| {
                        let spread: f64 = coef[r * p..(r + 1) * p].iter().map(|c| c.abs()).sum();
                        over_box[r].max(at[r] - spread)
                    })
                    .collect()
            }
        };
        best.iter().zip(&rows.bias).map(|(b, c)| b + c).collect()
    }
}

/// Options of a bound computation.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// IBP or CROWN.
    pub method: Method,
    /// Most work (elements bounded × elements of the tensors before them) for which CROWN
    /// bounds an intermediate tensor; larger ones keep their interval bounds.
    pub budget: f64,
}

/// The bounds of one set: interval bounds of every tensor (tightened by CROWN where it ran)
/// and how many intermediate tensors CROWN bounded.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Per tensor of [`BoundNet::shapes`].
    pub tensors: Vec<Interval>,
    /// Intermediate tensors bounded by CROWN.
    pub crown_tensors: usize,
    /// Intermediate tensors left with interval bounds where CROWN would have exceeded the budget.
    pub over_budget: usize,
    relax: Vec<Option<Relax>>,
}

/// Widens `b` outwards by two units in the last place: the `f32` functions of the
/// activations are within an ulp of the true value (module docs).
pub fn widen(b: &mut Interval) {
    for v in &mut b.lo {
        *v = v.next_down().next_down();
    }
    for v in &mut b.hi {
        *v = v.next_up().next_up();
    }
}

impl BoundNet {
    /// Bounds of every tensor over `set`.
    pub fn bounds(&self, set: &InputSet, opts: &Options) -> Bounds {
        let n_t = self.shapes.len();
        let mut tensors: Vec<Option<Interval>> = vec![None; n_t];
        tensors[0] = Some(set.bounding_box());
        let mut relax: Vec<Option<Relax>> = vec![None; self.nodes.len()];
        // Linear ops between the input and each tensor that mix elements: with at most one
        // and a box, interval bounds are exact.
        let mut mixing = vec![0usize; n_t];
        let producer: HashMap<usize, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(k, n)| (n.output, k))
            .collect();
        let (mut crown_tensors, mut over_budget) = (0, 0);
        // Elements of the tensors before each node: what one row pushed back to the input
        // crosses at most.
        let mut before = 0.0f64;
        for (k, node) in self.nodes.iter().enumerate() {
            let nonlinear = matches!(node.op, Op::Act(_) | Op::MaxPool(_));
            if nonlinear && opts.method == Method::Crown {
                let t = node.inputs[0];
                let from_act = producer
                    .get(&t)
                    .is_some_and(|&p| matches!(self.nodes[p].op, Op::Act(_)));
                let exact = mixing[t] <= 1 && matches!(set, InputSet::Box(_));
                if !from_act && !exact && t != 0 {
                    let elems =
                        self.worth_tightening(k, tensors[t].as_ref().expect("bounded in order"));
                    if elems.len() as f64 * before <= opts.budget {
                        let b = self.crown_tensor(t, &elems, set, &relax);
                        let cur = tensors[t].as_mut().expect("bounded in order");
                        for (&e, (l, h)) in elems.iter().zip(b) {
                            cur.lo[e] = cur.lo[e].max(l);
                            cur.hi[e] = cur.hi[e].min(h).max(cur.lo[e]);
                        }
                        crown_tensors += 1;
                    } else {
                        over_budget += 1;
                    }
                }
            }
            before += self.len(node.inputs[0]) as f64;
            let ins: Vec<&Interval> = node
                .inputs
                .iter()
                .map(|&t| tensors[t].as_ref().expect("bounded in order"))
                .collect();
            let shapes_in: Vec<&[usize]> = node
                .inputs
                .iter()
                .map(|&t| self.shapes[t].as_slice())
                .collect();
            relax[k] = match &node.op {
                Op::Act(act) => Some(Relax::Act(
                    ins[0]
                        .lo
                        .iter()
                        .zip(&ins[0].hi)
                        .map(|(&l, &u)| relax::relax(*act, l, u))
                        .collect(),
                )),
                Op::MaxPool(win) => Some(pool_relax(
                    ins[0],
                    chw(shapes_in[0]),
                    chw(&self.shapes[node.output]),
                    win,
                )),
                _ => None,
            };
            let mut out = interval::forward(&node.op, &ins, &shapes_in, &self.shapes[node.output]);
            widen(&mut out);
            tensors[node.output] = Some(out);
            mixing[node.output] = node.inputs.iter().map(|&t| mixing[t]).max().unwrap_or(0)
                + usize::from(matches!(
                    node.op,
                    Op::Conv { .. }
                        | Op::Linear { .. }
                        | Op::Sum(_)
                        | Op::AvgPool(..)
                        | Op::GlobalAvgPool
                ));
        }
        Bounds {
            tensors: tensors
                .into_iter()
                .map(|t| t.expect("every tensor bounded"))
                .collect(),
            crown_tensors,
            over_budget,
            relax,
        }
    }

    /// The elements of node `k`'s input `b` whose tighter bounds can tighten anything: all of
    /// them for a max pool, and for an activation those whose relaxation depends on the
    /// bounds, plus those that feed a max-pool window whose relaxation is not exact yet.
    fn worth_tightening(&self, k: usize, b: &Interval) -> Vec<usize> {
        let node = &self.nodes[k];
        let Op::Act(act) = node.op else {
            return (0..b.lo.len()).collect();
        };
        let mut keep: Vec<bool> =
            b.lo.iter()
                .zip(&b.hi)
                .map(|(&l, &u)| relax::kink_inside(act, l, u))
                .collect();
        let (lo, hi): (Vec<f32>, Vec<f32>) =
            b.lo.iter()
                .zip(&b.hi)
                .map(|(&l, &u)| relax::range(act, l, u))
                .unzip();
        for consumer in self
            .nodes
            .iter()
            .filter(|n| n.inputs.contains(&node.output))
        {
            let Op::MaxPool(win) = &consumer.op else {
                continue;
            };
            let (c, h, w) = chw(&self.shapes[node.output]);
            let (_, ho, wo) = chw(&self.shapes[consumer.output]);
            for oy in 0..ho {
                for ox in 0..wo {
                    let taps = linear::window_taps(win, oy, ox, h, w);
                    for ch in 0..c {
                        let idx: Vec<usize> =
                            taps.iter().map(|&(y, x)| (ch * h + y) * w + x).collect();
                        let best = *idx
                            .iter()
                            .max_by(|&&a, &&b| lo[a].total_cmp(&lo[b]))
                            .expect("a window has an input");
                        let others = idx
                            .iter()
                            .filter(|&&i| i != best)
                            .map(|&i| hi[i])
                            .fold(f32::NEG_INFINITY, f32::max);
                        if lo[best] < others {
                            for &i in &idx {
                                keep[i] |= !relax::constant_on(act, b.lo[i], b.hi[i]);
                            }
                        }
                    }
                }
            }
        }
        (0..keep.len()).filter(|&e| keep[e]).collect()
    }

    /// Lower bounds of the margins `z_k0 − z_j` for every `j ≠ k0` (in class order, `k0`
    /// left out) over `set`.
    /// The margins' CROWN rows go back to the input `MARGIN_ROWS` at a time (memory), and
    /// only when all of them cost at most `opts.budget` (else the interval bound stands, and
    /// [`Bounds::over_budget`] counts the logits).
    pub fn margins(&self, set: &InputSet, k0: usize, opts: &Options) -> (Vec<f64>, Bounds) {
        let mut b = self.bounds(set, opts);
        let k = self.classes();
        let others: Vec<usize> = (0..k).filter(|&j| j != k0).collect();
        // Interval bound with the margins folded into the last linear nodes.
        let (t, folded) = self.fold_linear_tail(margin_rows(k, k0, &others));
        let dims = chw(&self.shapes[t]);
        let mut lower = InputSet::Box(b.tensors[t].clone()).minimise(&folded, dims);
        if opts.method == Method::Crown {
            let crossed: f64 = (0..self.shapes.len()).map(|t| self.len(t) as f64).sum();
            if others.len() as f64 * crossed > opts.budget {
                b.over_budget += 1;
                return (lower, b);
            }
            for (c, part) in others.chunks(MARGIN_ROWS).enumerate() {
                let at_input = self.back_to_input(self.logits, margin_rows(k, k0, part), &b.relax);
                let crown = set.minimise(&at_input, chw(&self.shapes[0]));
                for (l, v) in lower[c * MARGIN_ROWS..].iter_mut().zip(crown) {
                    *l = l.max(v);
                }
            }
        }
        (lower, b)
    }

    /// The rows on the logits pushed back through the linear nodes that end the graph.
    fn fold_linear_tail(&self, rows: Rows) -> (usize, Rows) {
        let (mut t, mut rows) = (self.logits, rows);
        while let Some(node) = self.nodes.iter().rev().find(|n| n.output == t) {
            if node.inputs.len() != 1
                || !matches!(
                    node.op,
                    Op::Linear { .. }
                        | Op::Affine { .. }
                        | Op::Identity
                        | Op::Conv { .. }
                        | Op::Gather(_)
                )
            {
                break;
            }
            let shapes_in = [self.shapes[node.inputs[0]].as_slice()];
            let mut out = linear::backward(&node.op, rows, &shapes_in, &self.shapes[t], None);
            rows = out.remove(0).1;
            t = node.inputs[0];
        }
        (t, rows)
    }

    /// CROWN bounds `(lower, upper)` of the elements `elems` of tensor `t`, in chunks of rows.
    fn crown_tensor(
        &self,
        t: usize,
        elems: &[usize],
        set: &InputSet,
        relax: &[Option<Relax>],
    ) -> Vec<(f32, f32)> {
        let dims = chw(&self.shapes[t]);
        let chunk = (16_000_000 / self.len(0).max(1)).clamp(16, 4096);
        let mut out = vec![(0.0f32, 0.0f32); elems.len()];
        for (c, part) in elems.chunks(chunk).enumerate() {
            for neg in [false, true] {
                let rows = Rows::unit(dims, part, neg);
                let at_input = self.back_to_input(t, rows, relax);
                let m = set.minimise(&at_input, chw(&self.shapes[0]));
                for (j, v) in m.into_iter().enumerate() {
                    let v = v as f32;
                    let o = &mut out[c * chunk + j];
                    if neg {
                        o.1 = -v + 1e-5 * v.abs() + 1e-6;
                    } else {
                        o.0 = v - 1e-5 * v.abs() - 1e-6;
                    }
                }
            }
        }
        out
    }

    /// `rows` on tensor `t` pushed back to the input through every node before it.
    fn back_to_input(&self, t: usize, rows: Rows, relax: &[Option<Relax>]) -> Rows {
        let mut pending: HashMap<usize, Rows> = HashMap::new();
        pending.insert(t, rows);
        let last = self.nodes.iter().rposition(|n| n.output == t);
        if let Some(last) = last {
            for k in (0..=last).rev() {
                let node = &self.nodes[k];
                let Some(r) = pending.remove(&node.output) else {
                    continue;
                };
                let shapes_in: Vec<&[usize]> = node
                    .inputs
                    .iter()
                    .map(|&i| self.shapes[i].as_slice())
                    .collect();
                for (slot, r) in linear::backward(
                    &node.op,
                    r,
                    &shapes_in,
                    &self.shapes[node.output],
                    relax[k].as_ref(),
                ) {
                    let tin = node.inputs[slot];
                    let dims = chw(&self.shapes[tin]);
                    let merged = match pending.remove(&tin) {
                        Some(prev) => prev.add(r, dims),
                        None => r,
                    };
                    pending.insert(tin, merged);
                }
            }
        }
        pending.remove(&0).unwrap_or_else(|| {
            let dims = chw(&self.shapes[0]);
            Rows::full(dims, vec![0.0; dims.0 * dims.1 * dims.2], vec![0.0])
        })
    }
}

/// Margin rows pushed back to the input together.
const MARGIN_ROWS: usize = 64;

/// Rows `e_k0 − e_j` over the `k` logits, one per `j` of `others`.
fn margin_rows(k: usize, k0: usize, others: &[usize]) -> Rows {
    let mut vals = vec![0.0; others.len() * k];
    for (r, &j) in others.iter().enumerate() {
        vals[r * k + k0] = 1.0;
        vals[r * k + j] = -1.0;
    }
    Rows::full((k, 1, 1), vals, vec![0.0; others.len()])
}

/// The relaxation of a max pooling on input bounds `x`: below, the input with the largest
/// lower bound; above, that input where its lower bound is at least every other upper bound,
/// else the largest upper bound as a constant.
fn pool_relax(
    x: &Interval,
    (c, hi, wi): (usize, usize, usize),
    (_, ho, wo): (usize, usize, usize),
    win: &graph::Window,
) -> Relax {
    let mut out = vec![(0u32, None, 0.0f32); c * ho * wo];
    for oy in 0..ho {
        for ox in 0..wo {
            let taps = linear::window_taps(win, oy, ox, hi, wi);
            for ch in 0..c {
                let idx: Vec<usize> = taps.iter().map(|&(y, x)| (ch * hi + y) * wi + x).collect();
                let best = *idx
                    .iter()
                    .max_by(|&&a, &&b| x.lo[a].total_cmp(&x.lo[b]))
                    .expect("a pooling window has an input");
                let others_hi = idx
                    .iter()
                    .filter(|&&i| i != best)
                    .map(|&i| x.hi[i])
                    .fold(f32::NEG_INFINITY, f32::max);
                let max_hi = others_hi.max(x.hi[best]);
                let hi_src = (x.lo[best] >= others_hi).then_some(best as u32);
                out[(ch * ho + oy) * wo + ox] = (best as u32, hi_src, max_hi);
            }
        }
    }
    Relax::Pool(out)
}

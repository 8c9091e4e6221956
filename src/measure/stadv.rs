//! `stadv`: spatially transformed adversarial examples (Xiao et al., ICLR
//! 2018): a dense flow `(Δu, Δv)` per pixel, minimising
//! `L_adv + τ·L_flow` with L-BFGS (`argmin`), one image at a time.
//!
//! `L_adv = max(f_{k0} − max_{l≠k0} f_l, −κ)` (untargeted, on logits) and
//! `L_flow` is `transforms::FlowSmoothness` (axial neighbours, `ε = 1e-8`).
//! The gradient is the model's `vjp` at the warped image pulled back through
//! the flow warp (`Flow::vjp`) plus `τ·∇L_flow`. Sampling is bilinear with
//! replicated borders (stAdv clamps coordinates).
//!
//! Start: a tiny random flow (uniform in `±init` px, per-image seed; an
//! exactly zero flow sits where the smoothness term is not differentiable),
//! then up to `start_steps` DeepFool steps in flow space on the margin
//! alone, stopping at the first flow that flips the prediction. L-BFGS then
//! trades margin against smoothness from there. The random starts of the
//! reference code (±1 px, or ±0.1 px) leave rough flows that L-BFGS pulls
//! back to zero before they fool the model; the linearised start reaches a fooling flow
//! first (tests/it/geometric.rs checks the success rate).
//!
//! Every flow the optimiser evaluates is checked: the image is fooled when
//! one of them changes the prediction, and the one reported is the fooling
//! flow with the smallest objective (so a final iterate that slid back over
//! the boundary does not lose a success). Reported per image: `flow_loss`
//! (`L_flow`), mean and largest displacement in pixels and as a fraction of
//! the width, and the L-BFGS iterations.
//!
//! The smallest smooth flow that flips the label (a flow-budget search):
//! the fooling flow with the least `L_flow` among those evaluated is scaled
//! down to the smallest fooling multiple `s·flow` on a grid refined once
//! (`min_scale`, `min_flow_loss`, `min_max_disp_px`, `min_adv_pred`).
//! `L_flow` is nearly proportional to `s`. On the digits CNN every reported
//! flow already sits on the boundary (`min_scale` 1 at grid resolution
//! 1/256; tests/it/geometric.rs). A search over larger τ finds nothing
//! smoother: from a fooling start, L-BFGS at larger τ slides back over the
//! boundary and evaluates no smoother fooling flow (tried on the digits).

use std::cell::RefCell;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use transforms::{Border, Flow, FlowSmoothness, Sampling, Warp};

use super::frame::{
    describe, misclassified, result, save_panels, search_summary, warp_error, Clean, Frame,
};
use super::space::SpacedModel;
use super::Values;
use super::{Better, 
    values_of, Artifact, Context, Declaration, ImageResult, Measure, Outcome, Output, Summary,
    Units,
};
use crate::attack::vector::argmax;
use crate::error::{Error, Result};

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Weight of the smoothness loss.
    pub tau: f64,
    /// Margin floor `κ` of the adversarial loss.
    pub kappa: f64,
    /// L-BFGS iterations.
    pub max_iter: u64,
    /// L-BFGS memory.
    pub memory: usize,
    /// Half-width of the uniform random start, pixels.
    pub init: f64,
    /// Linearised (DeepFool) steps on the margin before L-BFGS; 0 starts
    /// L-BFGS from the random flow as the reference code does.
    pub start_steps: usize,
    /// Flow-budget search: the smoothest fooling flow is scaled by
    /// `s ∈ (0, 1]` on a grid of this many points, then refined once with
    /// as many between the last non-fooling and the first fooling `s`
    /// (two model calls per image); 0 turns it off.
    pub budget_grid: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            tau: 0.05,
            kappa: 0.0,
            max_iter: 100,
            memory: 20,
            init: 1e-4,
            start_steps: 20,
            budget_grid: 16,
        }
    }
}

/// Writes a flow (`2 × h × w`, du then dv) as float32 `.npy`.
fn save_flow(path: &std::path::Path, flow: &[f64], h: usize, w: usize) -> Result<()> {
    let values: Vec<f32> = flow.iter().map(|&v| v as f32).collect();
    crate::data::write_f32(path, &[2, h, w], &values)
}

/// A fooling flow kept for its score: (score, flow, class).
type Best = Option<(f64, Vec<f64>, usize)>;

/// One evaluation of the objective: (flow, cost, gradient).
type Evaluation = (Vec<f64>, f64, Vec<f64>);

/// The objective of one image.
struct Problem<'a> {
    sm: &'a SpacedModel<'a>,
    frame: Frame,
    x: &'a [f32],
    k0: usize,
    tau: f64,
    kappa: f64,
    sampling: Sampling,
    smooth: FlowSmoothness,
    /// Last evaluation: (flow, cost, gradient).
    cache: RefCell<Option<Evaluation>>,
    /// Fooling flow with the smallest objective.
    best: &'a RefCell<Best>,
    /// Fooling flow with the smallest smoothness loss `L_flow`.
    smoothest: &'a RefCell<Best>,
    error: &'a RefCell<Option<Error>>,
}

/// The model side of one flow: the margin, its gradient, the warped prediction.
struct Margin {
    /// `f_{k0} − max_{l≠k0} f_l` at the warped image.
    value: f64,
    /// Its gradient with respect to the flow.
    grad: Vec<f64>,
    /// Prediction at the warped image.
    pred: usize,
}

impl Problem<'_> {
    /// The margin at `flow` and its flow gradient (one VJP call).
    fn margin(&self, flow: &[f64]) -> Result<Margin> {
        let (h, w) = (self.frame.shape.h, self.frame.shape.w);
        let k = self.sm.classes();
        let batch = self.frame.batch(self.x, 1)?;
        let field = Flow::new(flow, 1, h, w).map_err(warp_error)?;
        let y = field.apply(&batch, self.sampling).map_err(warp_error)?;
        let logits = self.sm.logits(&y, 1)?;
        let (j, other) = logits
            .iter()
            .enumerate()
            .filter(|&(l, _)| l != self.k0)
            .fold(
                (0, f32::NEG_INFINITY),
                |acc, (l, &v)| if v > acc.1 { (l, v) } else { acc },
            );
        let mut cot = vec![0.0f32; k];
        cot[self.k0] = 1.0;
        cot[j] = -1.0;
        let (_, gy) = self.sm.vjp(&y, 1, &cot, 1)?;
        let grad = field.vjp(&batch, self.sampling, &gy).map_err(warp_error)?;
        Ok(Margin {
            value: f64::from(logits[self.k0] - other),
            grad,
            pred: argmax(&logits),
        })
    }

    /// Keeps `flow` if it fools the model with the smallest objective, or
    /// the smallest smoothness loss, so far.
    fn record(&self, flow: &[f64], cost: f64, loss: f64, pred: usize) {
        if pred != self.k0 {
            for (slot, score) in [(self.best, cost), (self.smoothest, loss)] {
                let mut slot = slot.borrow_mut();
                if slot.as_ref().is_none_or(|(c, _, _)| score < *c) {
                    *slot = Some((score, flow.to_vec(), pred));
                }
            }
        }
    }

    /// The objective `max(margin, −κ) + τ·L_flow` and its gradient.
    fn eval(&self, flow: &[f64]) -> Result<(f64, Vec<f64>)> {
        if let Some((f, c, g)) = self.cache.borrow().as_ref() {
            if f.as_slice() == flow {
                return Ok((*c, g.clone()));
            }
        }
        let (h, w) = (self.frame.shape.h, self.frame.shape.w);
        let field = Flow::new(flow, 1, h, w).map_err(warp_error)?;
        let (floss, fgrad) = self.smooth.loss_and_gradient(&field);
        // One VJP call gives the logits too; below −κ the margin term is
        // flat and its gradient is dropped.
        let m = self.margin(flow)?;
        let mut grad: Vec<f64> = fgrad.iter().map(|g| g * self.tau).collect();
        if m.value > -self.kappa {
            grad.iter_mut().zip(&m.grad).for_each(|(a, b)| *a += b);
        }
        let cost = m.value.max(-self.kappa) + self.tau * floss[0];
        self.record(flow, cost, floss[0], m.pred);
        *self.cache.borrow_mut() = Some((flow.to_vec(), cost, grad.clone()));
        Ok((cost, grad))
    }

    /// DeepFool in flow space on the margin alone, from `flow`, for at most
    /// `steps` steps or until the prediction flips (overshoot 0.02).
    fn linearised_start(&self, mut flow: Vec<f64>, steps: usize) -> Result<Vec<f64>> {
        for _ in 0..steps {
            let m = self.margin(&flow)?;
            if m.pred != self.k0 {
                break;
            }
            let norm2: f64 = m.grad.iter().map(|g| g * g).sum();
            if norm2 <= 0.0 || !norm2.is_finite() {
                break;
            }
            let s = 1.02 * m.value.max(0.0) / norm2 + 1e-12;
            flow.iter_mut().zip(&m.grad).for_each(|(f, g)| *f -= s * g);
        }
        Ok(flow)
    }

    fn eval_or_record(&self, flow: &[f64]) -> (f64, Vec<f64>) {
        match self.eval(flow) {
            Ok(v) => v,
            Err(e) => {
                *self.error.borrow_mut() = Some(e);
                (f64::NAN, vec![f64::NAN; flow.len()])
            }
        }
    }
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Self::Param) -> std::result::Result<f64, argmin::core::Error> {
        Ok(self.eval_or_record(p).0)
    }
}

impl Gradient for Problem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, p: &Self::Param) -> std::result::Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval_or_record(p).1)
    }
}

/// Bilinear sampling with replicated borders (stAdv clamps coordinates).
fn flow_sampling() -> Sampling {
    Sampling::new(Default::default(), Border::Replicate)
}

/// One stAdv attack: the fooling flow with the smallest objective and its
/// class (None when no evaluated flow fooled), the fooling flow with the
/// smallest smoothness loss, and the L-BFGS iterations.
struct Attempt {
    found: Option<(Vec<f64>, usize)>,
    smoothest: Best,
    iterations: f64,
}

/// Runs the linearised start and L-BFGS at weight `tau` on image `x`.
fn attack(
    sm: &SpacedModel,
    frame: Frame,
    x: &[f32],
    k0: usize,
    tau: f64,
    seed: u64,
    p: &Params,
) -> Result<Attempt> {
    let (h, w) = (frame.shape.h, frame.shape.w);
    let best = RefCell::new(None);
    let smoothest = RefCell::new(None);
    let error = RefCell::new(None);
    let problem = Problem {
        sm,
        frame,
        x,
        k0,
        tau,
        kappa: p.kappa,
        sampling: flow_sampling(),
        smooth: FlowSmoothness::default(),
        cache: RefCell::new(None),
        best: &best,
        smoothest: &smoothest,
        error: &error,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let jitter: Vec<f64> = (0..Flow::len_for(1, h, w))
        .map(|_| rng.random_range(-1.0..=1.0) * p.init)
        .collect();
    let init = problem.linearised_start(jitter, p.start_steps)?;
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), p.memory);
    let run = Executor::new(problem, solver)
        .configure(|s| s.param(init).max_iters(p.max_iter))
        .run();
    if let Some(e) = error.borrow_mut().take() {
        return Err(e);
    }
    let iterations = run
        .as_ref()
        .map(|r| r.state().get_iter() as f64)
        .unwrap_or(f64::NAN);
    let found = best.borrow_mut().take().map(|(_, flow, c)| (flow, c));
    let smoothest = smoothest.borrow_mut().take();
    Ok(Attempt {
        found,
        smoothest,
        iterations,
    })
}

/// The smallest fooling multiple `s·flow` (`s ∈ (0, 1]`) of a fooling
/// flow: a grid of `n` scales in one model call, then `n` more between the
/// last non-fooling and the first fooling one. Returns `s` and the class.
fn shrink(
    sm: &SpacedModel,
    frame: Frame,
    x: &[f32],
    k0: usize,
    flow: &[f64],
    n: usize,
) -> Result<(f64, usize)> {
    let (h, w) = (frame.shape.h, frame.shape.w);
    let k = sm.classes();
    let batch = frame.batch(x, 1)?;
    let classes_at = |scales: &[f64]| -> Result<Vec<usize>> {
        let mut warped = Vec::with_capacity(scales.len() * frame.d());
        for &s in scales {
            let scaled: Vec<f64> = flow.iter().map(|f| f * s).collect();
            let field = Flow::new(&scaled, 1, h, w).map_err(warp_error)?;
            warped.extend(field.apply(&batch, flow_sampling()).map_err(warp_error)?);
        }
        let logits = sm.logits(&warped, scales.len())?;
        Ok(logits.chunks_exact(k).map(argmax).collect())
    };
    let (mut lo, mut hi, mut class) = (0.0, 1.0, None);
    for _ in 0..2 {
        let scales: Vec<f64> = (1..=n)
            .map(|j| lo + (hi - lo) * j as f64 / n as f64)
            .collect();
        let classes = classes_at(&scales)?;
        if let Some(j) = classes.iter().position(|&c| c != k0) {
            hi = scales[j];
            lo = if j == 0 { lo } else { scales[j - 1] };
            class = Some(classes[j]);
        } else {
            break;
        }
    }
    Ok(match class {
        Some(c) => (hi, c),
        // The grid missed it (flips need not be monotone in s): the flow itself.
        None => (1.0, classes_at(&[1.0])?[0]),
    })
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "stadv",
        about: "smooth per-pixel flow field that flips the prediction (stAdv, L-BFGS)",
        params: &[
            ("tau", "Weight of the smoothness loss."),
            ("kappa", "Margin floor `κ` of the adversarial loss."),
            ("max_iter", "L-BFGS iterations."),
            ("memory", "L-BFGS memory."),
            ("init", "Half-width of the uniform random start, pixels."),
            ("start_steps", "Linearised (DeepFool) steps on the margin before L-BFGS; 0 starts L-BFGS from the random flow as the reference code does."),
            ("budget_grid", "Flow-budget search: the smoothest fooling flow is scaled by `s ∈ (0, 1]` on a grid of this many points, then refined once with as many between the last non-fooling and the first fooling `s` (two model calls per image); 0 turns it off."),
        ],
        headline: &["success_rate", "median_flow_loss"],
        better: &[("success_rate", Better::Lower), ("median_flow_loss", Better::Higher)],
        histograms: &["flow_loss"],
        values: &[&[
            ("flow_loss", "smoothness loss of the fooling flow"),
            ("mean_disp_px", "mean displacement, pixels"),
            ("max_disp_px", "largest displacement, pixels"),
            ("max_disp_frac", "largest displacement over the image side"),
            ("adv_pred", "class predicted under the flow"),
            ("iterations", "L-BFGS iterations"),
            ("min_scale", "smallest multiple s of the flow that still fools (budget search)"),
            ("min_flow_loss", "smoothness loss of the flow scaled by min_scale"),
            ("min_max_disp_px", "largest displacement of the scaled flow, pixels"),
            ("min_adv_pred", "class predicted under the scaled flow"),
        ]],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        if self.tau.is_nan() || self.tau < 0.0 || self.memory == 0 {
            return Err(Error::Config(
                "stadv: tau must be ≥ 0 and memory ≥ 1".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let (sm, frame) = Frame::of_context(ctx);
        let (h, w) = (frame.shape.h, frame.shape.w);
        let k = sm.classes();
        let sampling = flow_sampling();
        let smooth = FlowSmoothness::default();
        let clean = Clean::load(ctx, &sm)?;
        let bar = ctx.progress.bar(clean.n as u64, "stadv");
        let mut images = Vec::with_capacity(clean.n);
        let mut shown = Vec::new();
        let mut artifacts = Vec::new();
        // Images are independent: several at once where the backend runs concurrent calls.
        let attempts = ctx.model.executor().map_concurrent(clean.n, |i| {
            let pred = clean.pred(i, k);
            if misclassified(ctx, i, pred) {
                bar.inc(1);
                return Ok(None);
            }
            let x = &clean.image(i)?;
            let attempt = attack(&sm, frame, x, pred, self.tau, ctx.image_seed(i), self)?;
            let shrunk = match (self.budget_grid > 0, &attempt.smoothest) {
                (true, Some((_, flow, _))) => {
                    Some(shrink(&sm, frame, x, pred, flow, self.budget_grid)?)
                }
                _ => None,
            };
            bar.inc(1);
            Ok(Some((attempt, shrunk)))
        })?;
        for (i, attempt) in attempts.into_iter().enumerate() {
            let pred = clean.pred(i, k);
            let Some((attempt, shrunk)) = attempt else {
                images.push(result(ctx, i, pred, Outcome::Misclassified, Values::new()));
                continue;
            };
            let iterations = attempt.iterations;
            let mut values = Values::from([("iterations", iterations)]);
            if let (Some((scale, class)), Some((_, flow, _))) = (shrunk, &attempt.smoothest) {
                let scaled: Vec<f64> = flow.iter().map(|f| f * scale).collect();
                let field = Flow::new(&scaled, 1, h, w).map_err(warp_error)?;
                let loss = smooth.loss(&field)[0];
                values.insert("min_scale", scale);
                values.insert("min_flow_loss", loss);
                values.insert("min_max_disp_px", field.stats()[0].max);
                values.insert("min_adv_pred", class as f64);
            }
            let outcome = match attempt.found {
                None => Outcome::Failed,
                Some((flow, c)) => {
                    let field = Flow::new(&flow, 1, h, w).map_err(warp_error)?;
                    let stats = field.stats()[0];
                    let loss = smooth.loss(&field)[0];
                    values.insert("adv_pred", c as f64);
                    values.insert("flow_loss", loss);
                    values.insert("mean_disp_px", stats.mean);
                    values.insert("max_disp_px", stats.max);
                    values.insert("max_disp_frac", stats.max / w as f64);
                    if let Some(dir) = ctx.out_dir {
                        let name = format!("stadv_{i}_flow.npy");
                        save_flow(&dir.join(&name), &flow, h, w)?;
                        artifacts.push(Artifact {
                            description: format!(
                                "{}: flow field (2, H, W): du, dv in pixels",
                                ctx.data.items[i].name
                            ),
                            path: name,
                        });
                        if shown.len() < 3 {
                            let image = clean.image(i)?;
                            let batch = frame.batch(&image, 1)?;
                            let warped = field.apply(&batch, sampling).map_err(warp_error)?;
                            let caption = format!(
                                "{}: original (class {pred}) | flowed (class {c}, max {:.2} px, smoothness {loss:.1})",
                                ctx.data.items[i].name, stats.max
                            );
                            shown.push((i, warped, caption));
                        }
                    }
                    Outcome::Fooled
                }
            };
            images.push(result(ctx, i, pred, outcome, values));
        }
        bar.finish_and_clear();
        if let Some(dir) = ctx.out_dir {
            artifacts.extend(save_panels(dir, "stadv", &frame, &clean, &shown)?);
        }
        Ok(Output {
            images,
            extra: serde_json::json!({
                "smoothness": "sum over pixels and axial neighbours of sqrt(du^2 + dv^2 + 1e-8)",
                "sampling": "bilinear, replicated borders",
            }),
            artifacts,
            ..Output::default()
        })
    }

    /// Rates over the images searched, and statistics of the flows found (over the fooled
    /// images) and of the smallest fooling multiples (over the images that have one).
    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        let (_, mut summary) = search_summary(images);
        let fooled = |key: &str| super::deepfool::fooled_values(images, key);
        describe(&mut summary, "flow_loss", &fooled("flow_loss"));
        describe(&mut summary, "mean_disp_px", &fooled("mean_disp_px"));
        describe(&mut summary, "max_disp_px", &fooled("max_disp_px"));
        describe(&mut summary, "min_scale", &values_of(images, "min_scale"));
        describe(&mut summary, "min_flow_loss", &values_of(images, "min_flow_loss"));
        Ok(Summary {
            summary,
            extra: Summary::first_extra(&parts),
        })
    }
}

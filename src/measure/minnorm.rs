//! `minnorm`: the smallest additive perturbation of every correctly classified image that the
//! strongest search georob has finds: DeepFool's answer, refined by a line search back towards
//! the image and by fast-minimum-norm boundary steps ([`crate::attack::refine`];
//! docs/methods.md, minnorm). Same per-image values as `deepfool`, smaller norms.

use serde::{Deserialize, Serialize};

use super::deepfool::{run_refined, summarise, Keep, VALUES};
use super::{Better, Context, Declaration, ImageResult, Measure, Output, Summary, Units};
use crate::attack::deepfool::{DeepFoolOptions, Norm};
use crate::attack::refine::RefineOptions;
use crate::error::{Error, Result};

/// How hard the search tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strength {
    /// DeepFool, line search, [`FAST_STEPS`] boundary steps.
    #[default]
    Fast,
    /// DeepFool, line search, [`THOROUGH_STEPS`] boundary steps.
    Thorough,
}

/// Precision of the line search in halvings: the perturbation is within `2⁻¹²` of its length of the
/// boundary along its own direction before the boundary steps start.
const BISECTION: usize = 12;

/// Boundary steps of `strength = fast`.
pub const FAST_STEPS: usize = 10;
/// Boundary steps of `strength = thorough`.
pub const THOROUGH_STEPS: usize = 20;

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// `l2` or `linf`.
    pub norm: Norm,
    /// `fast` or `thorough`.
    pub strength: Strength,
    /// Boundary steps, overriding the strength's.
    pub steps: Option<usize>,
    /// DeepFool's iteration budget.
    pub max_iter: usize,
    /// Candidate classes of DeepFool (top N of the clean prediction, incl. it).
    pub candidates: usize,
    /// Clip every point to `--bounds` (when there are bounds).
    pub clip: bool,
    /// Budgets of the summary's `robust_accuracy@ε` keys, in the chosen norm.
    pub eps: Option<Vec<f64>>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            norm: Norm::L2,
            strength: Strength::Fast,
            steps: None,
            max_iter: 50,
            candidates: 10,
            clip: true,
            eps: None,
        }
    }
}

impl Params {
    /// Boundary steps in force.
    pub fn steps(&self) -> usize {
        self.steps.unwrap_or(match self.strength {
            Strength::Fast => FAST_STEPS,
            Strength::Thorough => THOROUGH_STEPS,
        })
    }
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "minnorm",
        about: "minimal additive perturbation as small as georob finds it (l2 or linf): DeepFool, then a line search and fast-minimum-norm boundary steps; robust accuracy against ε",
        params: &[
            ("norm", "`l2` or `linf`."),
            ("strength", "`fast` (10 boundary steps, about 2× DeepFool's time on the digits CNN) or `thorough` (20 steps, about 4×)."),
            ("steps", "Boundary steps, overriding the strength's."),
            ("max_iter", "DeepFool's iteration budget."),
            ("candidates", "Candidate classes of DeepFool (top N of the clean prediction, incl. it)."),
            ("clip", "Clip every point to `--bounds` (when there are bounds)."),
            ("eps", "Budgets of the summary's `robust_accuracy@ε` keys, in the chosen norm (default: 0.1, 0.25, 0.5, 1, 2 for l2; 0.004, 0.01, 0.02, 0.05, 0.1, 0.2 for linf)."),
        ],
        headline: &["median_norm_l2", "median_norm_linf", "success_rate"],
        better: &[("median_norm_l2", Better::Higher), ("median_norm_linf", Better::Higher), ("success_rate", Better::Lower)],
        histograms: &["norm_l2", "norm_linf"],
        values: &[VALUES],
        units: Units::Chunks,
    };

    fn validate(&self) -> Result<()> {
        if let Some(eps) = &self.eps {
            super::curve::check_budgets("minnorm", eps)?;
        }
        if self.max_iter == 0 || self.candidates < 2 {
            return Err(Error::Config(
                "minnorm: max_iter must be at least 1 and candidates at least 2".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let clip = if self.clip { ctx.bounds } else { None };
        let opts = DeepFoolOptions {
            norm: self.norm,
            max_iter: self.max_iter,
            candidates: self.candidates,
            clip,
            ..DeepFoolOptions::default()
        };
        let refine = RefineOptions {
            norm: self.norm,
            bisection: BISECTION,
            steps: self.steps(),
            clip,
        };
        let (images, _) = run_refined(ctx, &opts, Some(&refine), "minnorm", Keep::Nothing)?;
        Ok(Output {
            images,
            extra: serde_json::json!({
                "clipped_to": clip,
                "boundary_steps": self.steps(),
            }),
            ..Output::default()
        })
    }

    fn summarise(&self, images: &[ImageResult], parts: Vec<Summary>) -> Result<Summary> {
        Ok(summarise(images, &parts, self.norm, self.eps.as_deref()))
    }
}

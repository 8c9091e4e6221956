//! Robust accuracy against a budget, read off per-image minimal perturbations
//! (docs/methods.md, robust-accuracy curves).
//!
//! An image counts as robust at budget `ε` when the model classifies it correctly and the
//! smallest perturbation the measure found for it is larger than `ε` (or none was found);
//! the size is the absolute value of a per-image value (a norm, a geodesic score, an angle).
//! Since attacks give upper bounds on each image's minimal perturbation, the curve is an
//! upper bound on the true robust accuracy. The fraction is over every image of the data
//! set, misclassified ones included (they are not robust at any budget).

use std::collections::BTreeMap;

use serde_json::json;

use super::{ImageResult, Outcome};

/// The budget a found perturbation of image `img` needs, from its per-image value `key`:
/// `Some(0)` for a misclassified image, `None` when nothing was found (robust at every
/// budget tried), else the value.
fn needed(img: &ImageResult, key: &str) -> Option<f64> {
    match img.outcome {
        Outcome::Misclassified => Some(0.0),
        Outcome::Fooled => img.values.get(key).map(|v| v.abs()),
        _ => None,
    }
}

/// Robust accuracy at `eps`: the fraction of `images` that are robust at that budget.
pub fn robust_accuracy(images: &[ImageResult], key: &str, eps: f64) -> Option<f64> {
    if images.is_empty() {
        return None;
    }
    let robust = images
        .iter()
        .filter(|i| needed(i, key).is_none_or(|v| v > eps))
        .count();
    Some(robust as f64 / images.len() as f64)
}

/// Adds `NAME@ε` for every `ε` of `eps` to `summary` (gate keys such as
/// `minnorm.robust_accuracy@0.5`; `ε` written with at most 9 decimals), and returns the
/// whole step curve for `extra` (as `NAME_curve`, which the HTML report draws):
/// `{"value": key, "points": [[ε, accuracy], ...]}`, one point at `ε = 0` and one at each
/// budget where an image stops being robust.
pub fn add(
    summary: &mut BTreeMap<String, f64>,
    name: &str,
    images: &[ImageResult],
    key: &str,
    eps: &[f64],
) -> serde_json::Value {
    for &e in eps {
        if let Some(acc) = robust_accuracy(images, key, e) {
            let e = (e * 1e9).round() / 1e9;
            summary.insert(format!("{name}@{e}"), acc);
        }
    }
    let mut steps: Vec<f64> = images
        .iter()
        .filter_map(|i| needed(i, key))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    steps.sort_by(f64::total_cmp);
    steps.dedup();
    let mut points = vec![];
    for e in std::iter::once(0.0).chain(steps) {
        if let Some(acc) = robust_accuracy(images, key, e) {
            points.push(json!([e, acc]));
        }
    }
    json!({ "value": key, "points": points })
}

/// Fails unless `eps`, the budgets of measure `measure`'s parameter `eps`, is a non-empty
/// list of finite budgets ≥ 0.
pub fn check_budgets(measure: &str, eps: &[f64]) -> crate::error::Result<()> {
    if eps.is_empty() || eps.iter().any(|e| !e.is_finite() || *e < 0.0) {
        return Err(crate::error::Error::Config(format!(
            "{measure}: eps must be a non-empty list of finite budgets ≥ 0, not {eps:?}"
        )));
    }
    Ok(())
}

/// At most five of the sorted `budgets`, evenly spread from the first to the last, for the
/// summary keys of a long curve.
pub fn five_of(budgets: &[f64]) -> Vec<f64> {
    if budgets.len() <= 5 {
        return budgets.to_vec();
    }
    let last = budgets.len() - 1;
    (0..5).map(|j| budgets[(j * last + 2) / 4]).collect()
}

/// Default budgets: for `[0,1]` pixels, budgets of the size the literature reports
/// (ℓ∞ from 1/255 up, ℓ2 from 0.1 up).
pub fn default_eps(norm: crate::attack::deepfool::Norm) -> Vec<f64> {
    match norm {
        crate::attack::deepfool::Norm::L2 => vec![0.1, 0.25, 0.5, 1.0, 2.0],
        crate::attack::deepfool::Norm::Linf => vec![0.004, 0.01, 0.02, 0.05, 0.1, 0.2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Values;

    fn image(outcome: Outcome, norm: Option<f64>) -> ImageResult {
        let mut values = Values::new();
        if let Some(v) = norm {
            values.insert("norm_l2", v);
        }
        ImageResult {
            index: 0,
            name: String::new(),
            label: Some(0),
            pred: 0,
            outcome,
            values,
        }
    }

    /// Counted by hand: 4 images, one misclassified, one never fooled, two fooled at 0.5 and 1.
    #[test]
    fn counts_every_image_and_steps_where_one_falls() {
        let images = [
            image(Outcome::Misclassified, None),
            image(Outcome::Failed, None),
            image(Outcome::Fooled, Some(0.5)),
            image(Outcome::Fooled, Some(1.0)),
        ];
        let mut summary = BTreeMap::new();
        let curve = add(
            &mut summary,
            "robust_accuracy",
            &images,
            "norm_l2",
            &[0.25, 0.5, 2.0 + 1e-12],
        );
        assert_eq!(summary["robust_accuracy@0.25"], 0.75);
        assert_eq!(summary["robust_accuracy@0.5"], 0.5);
        assert_eq!(summary["robust_accuracy@2"], 0.25);
        assert_eq!(
            curve["points"],
            json!([[0.0, 0.75], [0.5, 0.5], [1.0, 0.25]])
        );
    }
}

//! Exact gradients against central finite differences along random unit directions
//! (`georob check-grad`): per sample, the top-class cotangent and a random mix of all
//! classes, each contracted with `directions` random directions.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::fd;
use crate::attack::vector::argmax;
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Model;
use crate::spec::Layout;

/// Relative size of the noise that moves data samples off ties: `±JITTER · max(1, ‖x‖∞)`.
pub const JITTER: f32 = 5e-3;

/// Step multipliers of the finite differences (unit directions, base step
/// [`fd::default_step`]): small steps lose digits to float32 rounding, large ones cross kinks.
const STEPS: [f32; 3] = [1.0, 10.0, 100.0];

/// The check of one sample.
#[derive(Debug, Clone)]
pub struct CheckRow {
    /// Item name, or `random #i`.
    pub sample: String,
    /// Its top class.
    pub top: usize,
    /// Cosine between exact and finite-difference directional derivatives.
    pub cosine: f64,
    /// Their relative error.
    pub rel: f64,
    /// Largest finite-difference value (the scale of `rel`).
    pub scale: f64,
}

/// Checks `model`'s exact gradients on the first `samples` items of `data` (moved off ties by
/// [`JITTER`]) or, without data, on `samples` seeded random images; `directions` random
/// directions per cotangent.
pub fn check(
    model: &Model,
    data: Option<&Dataset>,
    samples: usize,
    directions: usize,
    seed: u64,
) -> Result<Vec<CheckRow>> {
    let (d, k) = (model.spec.sample_len(), model.classes);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (x, names): (Vec<f32>, Vec<String>) = match data {
        Some(data) => {
            let n = samples.min(data.len());
            let mut x = data.load(&model.spec, 0, n)?.x;
            jitter(&mut x, d, &mut rng);
            (x, data.items[..n].iter().map(|i| i.name.clone()).collect())
        }
        None => (
            random_inputs(model, samples, &mut rng),
            (0..samples).map(|i| format!("random #{i}")).collect(),
        ),
    };
    let mut rows = Vec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        let xi = &x[i * d..(i + 1) * d];
        // Two cotangents: the top class alone, and a random mix of all classes.
        let top = argmax(&model.logits(xi, 1)?);
        let mut cot = vec![0.0f32; 2 * k];
        cot[top] = 1.0;
        for c in &mut cot[k..] {
            *c = rng.sample(StandardNormal);
        }
        let (_, g) = model.vjp(xi, 1, &cot, 2)?;
        let mut v: Vec<f32> = (0..directions * d)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        // Unit L2 norm: the step moves x by `h`, so few kinks are crossed.
        for row in v.chunks_mut(d) {
            let norm = row.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-30);
            row.iter_mut().for_each(|a| *a /= norm);
        }
        let h = fd::default_step(xi);
        let f = |rows: &[f32]| model.logits(rows, rows.len() / d);
        let jvs = STEPS
            .iter()
            .map(|s| fd::jvp(f, xi, &v, h * s))
            .collect::<Result<Vec<_>>>()?;
        let mut exact: Vec<f64> = Vec::with_capacity(2 * directions);
        let mut differences: Vec<f64> = Vec::with_capacity(2 * directions);
        for mi in 0..2 {
            let (gm, cm) = (&g[mi * d..(mi + 1) * d], &cot[mi * k..(mi + 1) * k]);
            for j in 0..directions {
                let vj = &v[j * d..(j + 1) * d];
                exact.push(gm.iter().zip(vj).map(|(a, b)| *a as f64 * *b as f64).sum());
                let at = |jv: &Vec<f64>| -> f64 {
                    jv[j * k..(j + 1) * k]
                        .iter()
                        .zip(cm)
                        .map(|(a, b)| a * *b as f64)
                        .sum()
                };
                differences.push(consistent(&jvs.iter().map(at).collect::<Vec<_>>()));
            }
        }
        let (cosine, rel) = fd::compare(&exact, &differences);
        let scale = differences.iter().fold(0f64, |m, v| m.max(v.abs()));
        rows.push(CheckRow {
            sample: name,
            top,
            cosine,
            rel,
            scale,
        });
    }
    Ok(rows)
}

/// `n` seeded random inputs: uniform pixels in `[0, 1]` taken to model space.
fn random_inputs(model: &Model, n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let spec = &model.spec;
    let (c, hw) = (spec.channels.count(), spec.height * spec.width);
    let mut x = Vec::with_capacity(n * spec.sample_len());
    for _ in 0..n {
        for i in 0..spec.sample_len() {
            let ch = match spec.layout {
                Layout::Nchw => i / hw,
                Layout::Nhwc => i % c,
            };
            x.push(spec.normalise(ch, rng.random::<f32>()));
        }
    }
    x
}

/// Moves data samples off ties (flat image borders make MaxPool and ReLU ties, where no
/// gradient matches every one-sided difference) by uniform noise of `±JITTER · max(1, ‖x‖∞)`.
fn jitter(x: &mut [f32], d: usize, rng: &mut ChaCha8Rng) {
    for row in x.chunks_mut(d) {
        let scale = JITTER * row.iter().fold(1f32, |m, v| m.max(v.abs()));
        for v in row {
            *v += scale * (2.0 * rng.random::<f32>() - 1.0);
        }
    }
}

/// The finite difference to trust among those at increasing [`STEPS`]: of the two neighbouring
/// steps that agree best, the smaller. Chosen without looking at the exact gradient.
fn consistent(values: &[f64]) -> f64 {
    let best = (0..values.len() - 1)
        .min_by(|&a, &b| {
            let da = (values[a] - values[a + 1]).abs();
            let db = (values[b] - values[b + 1]).abs();
            da.total_cmp(&db)
        })
        .unwrap_or(0);
    values[best]
}

#[cfg(test)]
mod tests {
    use super::consistent;

    #[test]
    fn the_trusted_difference_is_the_smaller_of_the_closest_pair() {
        // Steps 1, 10, 100: rounding spoils the first, a kink the last.
        assert_eq!(consistent(&[0.7, 1.001, 1.0, 3.0]), 1.001);
        assert_eq!(consistent(&[2.0, 2.0]), 2.0);
    }
}

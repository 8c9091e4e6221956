//! `curvature`: curvature of the decision boundary at the DeepFool boundary
//! point (ICLR 2018; docs/methods.md, curvature).
//!
//! For each correctly classified image, `z = x + r*` (unclipped L2 DeepFool)
//! and `G = f_adv − f_k0`. Hessian–vector products by central differences of
//! exact gradients, `H v ≈ [∇G(z+hv) − ∇G(z−hv)]/(2h)` with
//! `h = h_fraction·‖r*‖` (ReLU nets are piecewise linear: curvature exists
//! only at a finite scale, so `h` is recorded). The boundary's curvature lives in
//! its tangent space, so every product is projected there: with `n = ∇G/‖∇G‖`
//! and `P = I − n nᵀ`, the operator is `P H P/‖∇G(z)‖` (docs/methods.md, curvature: `κ_v`
//! for unit `v ⊥ ∇G`). Lanczos with full re-orthogonalisation, batched over
//! images (one VJP call of `2n` rows per step), gives its top `q` eigenvalues
//! per image, and those of the average `H̄ = mean_i P_i H_i P_i/‖∇G_i‖` (shared
//! directions). `κ > 0`: the boundary bends towards `x`.

use std::collections::BTreeMap;
use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use transforms::nalgebra::DMatrix;

use super::deepfool::Keep;
use super::space::SpacedModel;
use super::{Context, Counts, Declaration, Measure, Output, Units};
use crate::attack::deepfool::{DeepFoolOptions, DeepFoolOutcome};
use crate::attack::vector::l2;
use crate::error::Result;

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Eigenvalues reported per image.
    pub q: usize,
    /// Lanczos steps (about 2q–3q or more).
    pub steps: usize,
    /// Finite-difference step as a fraction of `‖r*‖`.
    pub h_fraction: f64,
    /// Compute the shared (averaged) Hessian's top eigenvalues.
    pub shared: bool,
    /// DeepFool overshoot.
    pub overshoot: f32,
    /// DeepFool iteration budget.
    pub max_iter: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            q: 5,
            steps: 20,
            h_fraction: 0.1,
            shared: true,
            overshoot: 0.02,
            max_iter: 50,
        }
    }
}

/// Eigen-decomposition of a small symmetric matrix (`n×n`, row-major):
/// eigenvalues (descending) and eigenvectors (columns of the returned
/// row-major matrix, in the same order). nalgebra does the work.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let eig = DMatrix::from_row_slice(n, n, a).symmetric_eigen();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let vals = order.iter().map(|&i| eig.eigenvalues[i]).collect();
    let mut vecs = vec![0.0; n * n];
    for (c, &o) in order.iter().enumerate() {
        for r in 0..n {
            vecs[r * n + c] = eig.eigenvectors[(r, o)];
        }
    }
    (vals, vecs)
}

/// Ritz values (descending) and their Ritz vectors.
pub type RitzPairs = (Vec<f64>, Vec<Vec<f32>>);

/// Lanczos with full re-orthogonalisation on `p` independent symmetric
/// operators at once. `op` maps `p` vectors (`p × d`) to their products.
/// Returns per problem the Ritz values (descending) and Ritz vectors (`d` each).
pub fn lanczos_batch(
    p: usize,
    d: usize,
    steps: usize,
    start: &[f32],
    mut op: impl FnMut(&[f32]) -> Result<Vec<f32>>,
) -> Result<Vec<RitzPairs>> {
    let steps = steps.min(d).max(1);
    let mut basis: Vec<Vec<Vec<f64>>> = vec![vec![]; p];
    let mut alpha: Vec<Vec<f64>> = vec![vec![]; p];
    let mut beta: Vec<Vec<f64>> = vec![vec![]; p];
    let mut done = vec![false; p];
    let mut cur: Vec<Vec<f64>> = (0..p)
        .map(|i| {
            let v: Vec<f64> = start[i * d..(i + 1) * d]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
            v.into_iter().map(|x| x / n).collect()
        })
        .collect();
    for _ in 0..steps {
        if done.iter().all(|&x| x) {
            break;
        }
        let input: Vec<f32> = cur
            .iter()
            .flat_map(|v| v.iter().map(|&x| x as f32))
            .collect();
        let out = op(&input)?;
        for i in 0..p {
            if done[i] {
                continue;
            }
            let q = cur[i].clone();
            let mut w: Vec<f64> = out[i * d..(i + 1) * d]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let a: f64 = w.iter().zip(&q).map(|(x, y)| x * y).sum();
            basis[i].push(q);
            alpha[i].push(a);
            // Full re-orthogonalisation (twice for stability).
            for _ in 0..2 {
                for b in &basis[i] {
                    let c: f64 = w.iter().zip(b).map(|(x, y)| x * y).sum();
                    w.iter_mut().zip(b).for_each(|(x, y)| *x -= c * y);
                }
            }
            let nb = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            let scale = alpha[i]
                .iter()
                .fold(0.0f64, |m, x| m.max(x.abs()))
                .max(1e-30);
            if nb <= 1e-10 * scale || nb == 0.0 || basis[i].len() >= steps {
                done[i] = true;
                continue;
            }
            beta[i].push(nb);
            cur[i] = w.into_iter().map(|x| x / nb).collect();
        }
    }
    Ok((0..p)
        .map(|i| {
            let m = alpha[i].len();
            let mut t = vec![0.0; m * m];
            for j in 0..m {
                t[j * m + j] = alpha[i][j];
                if j + 1 < m {
                    t[j * m + j + 1] = beta[i][j];
                    t[(j + 1) * m + j] = beta[i][j];
                }
            }
            let (vals, vecs) = symmetric_eigen(&t, m);
            let ritz = (0..m)
                .map(|c| {
                    let mut y = vec![0.0f64; d];
                    for (r, b) in basis[i].iter().enumerate() {
                        let s = vecs[r * m + c];
                        y.iter_mut().zip(b).for_each(|(a, x)| *a += s * x);
                    }
                    y.into_iter().map(|x| x as f32).collect()
                })
                .collect();
            (vals, ritz)
        })
        .collect())
}

/// Boundary points of a set of images: `z`, `(k0, adv)`, the unit normal `∇G(z)/‖∇G(z)‖`,
/// `‖∇G(z)‖`, `h`.
pub(super) struct Points {
    z: Vec<f32>,
    classes: Vec<(usize, usize)>,
    normal: Vec<f32>,
    grad_norm: Vec<f64>,
    h: Vec<f64>,
}

impl Points {
    pub(super) fn new() -> Self {
        Points {
            z: vec![],
            classes: vec![],
            normal: vec![],
            grad_norm: vec![],
            h: vec![],
        }
    }

    /// Adds the boundary points `z = x + r` of images `x` (`n × d`, measured space) with
    /// their DeepFool outcomes, and the gradient norm of `G = f_adv − f_k0` there; `h` (the
    /// HVP step) is `h_fraction · ‖r‖`.
    pub(super) fn add(
        &mut self,
        sm: &SpacedModel,
        x: &[f32],
        outcomes: &[&DeepFoolOutcome],
        h_fraction: f64,
    ) -> Result<()> {
        let d = sm.dim();
        let k = sm.classes();
        let mut cot = vec![0.0f32; outcomes.len() * k];
        let mut z = Vec::with_capacity(outcomes.len() * d);
        for (a, o) in outcomes.iter().enumerate() {
            z.extend(x[a * d..(a + 1) * d].iter().zip(&o.r).map(|(x, r)| x + r));
            cot[a * k + o.adv_class] = 1.0;
            cot[a * k + o.clean_class] = -1.0;
        }
        let (_, g) = sm.vjp(&z, outcomes.len(), &cot, 1)?;
        for (a, o) in outcomes.iter().enumerate() {
            let ga = &g[a * d..(a + 1) * d];
            let norm = l2(ga).max(1e-30);
            self.classes.push((o.clean_class, o.adv_class));
            self.normal
                .extend(ga.iter().map(|&e| (f64::from(e) / norm) as f32));
            self.grad_norm.push(norm);
            self.h.push((h_fraction * l2(&o.r)).max(1e-6));
        }
        self.z.extend(z);
        Ok(())
    }

    /// Number of points.
    pub(super) fn len(&self) -> usize {
        self.classes.len()
    }

    /// Projects `v` (one `d`-vector per point from point `first` on) onto each point's
    /// tangent space: `v_i − (n_i·v_i) n_i`.
    pub(super) fn to_tangent(&self, first: usize, v: &mut [f32]) {
        let d = self.z.len() / self.len().max(1);
        for (vi, ni) in v.chunks_mut(d).zip(self.normal.chunks(d).skip(first)) {
            let c: f64 = vi
                .iter()
                .zip(ni)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            vi.iter_mut()
                .zip(ni)
                .for_each(|(a, b)| *a -= (c * f64::from(*b)) as f32);
        }
    }
}

/// The top eigenpairs (values descending, unit vectors) of the shared Hessian
/// `H̄ = mean_i P_i H_i P_i / ‖∇G_i‖` over the boundary points, by `steps` Lanczos steps from a
/// random start drawn with `seed`.
pub(super) fn shared_eigen(
    sm: &SpacedModel,
    pts: &Points,
    steps: usize,
    seed: u64,
) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
    let d = sm.dim();
    let n = pts.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s: Vec<f32> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
    // Points per HVP call: its `2 × points × d` rows stay within about 32 MB, however many
    // points there are.
    let per = (4_000_000 / d.max(1)).max(1);
    let mut res = lanczos_batch(1, d, steps, &s, |v| {
        let mut out = vec![0.0f32; d];
        for start in (0..n).step_by(per) {
            let points = start..n.min(start + per);
            let rep: Vec<f32> = points.clone().flat_map(|_| v.iter().copied()).collect();
            let hv = hvp(sm, pts, points, &rep)?;
            for c in hv.chunks(d) {
                out.iter_mut().zip(c).for_each(|(a, b)| *a += b / n as f32);
            }
        }
        Ok(out)
    })?;
    Ok(res.swap_remove(0))
}

/// `P_i H_i P_i v_i / ‖∇G_i‖` for every point `i` of `points` (`P_i` the projection onto the
/// boundary's tangent space at `z_i`; `v` one `d`-vector per point), the Hessian product by
/// central differences: one VJP call of `2 × points` rows.
fn hvp(sm: &SpacedModel, pts: &Points, points: Range<usize>, v: &[f32]) -> Result<Vec<f32>> {
    let d = sm.dim();
    let k = sm.classes();
    let (first, n) = (points.start, points.len());
    let mut v = v.to_vec();
    pts.to_tangent(first, &mut v);
    let mut x = Vec::with_capacity(2 * n * d);
    let mut cot = vec![0.0f32; 2 * n * k];
    for (a, i) in points.enumerate() {
        let z = &pts.z[i * d..(i + 1) * d];
        let vi = &v[a * d..(a + 1) * d];
        let h = pts.h[i] as f32;
        for (r, sign) in [(2 * a, 1.0f32), (2 * a + 1, -1.0)] {
            x.extend(z.iter().zip(vi).map(|(a, b)| a + sign * h * b));
            let (k0, adv) = pts.classes[i];
            cot[r * k + adv] = 1.0;
            cot[r * k + k0] = -1.0;
        }
    }
    let (_, g) = sm.vjp(&x, 2 * n, &cot, 1)?;
    let mut out = vec![0.0f32; n * d];
    for a in 0..n {
        let i = first + a;
        let s = (1.0 / (2.0 * pts.h[i] * pts.grad_norm[i])) as f32;
        for t in 0..d {
            out[a * d + t] = (g[2 * a * d + t] - g[(2 * a + 1) * d + t]) * s;
        }
    }
    pts.to_tangent(first, &mut out);
    Ok(out)
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "curvature",
        about: "boundary curvature at x + r*: top-q eigenvalues of the Hessian of f_adv - f_k0 in the boundary's tangent space over |grad| (Lanczos on finite-difference HVPs), per image and shared",
        params: &[
            ("q", "Eigenvalues reported per image."),
            ("steps", "Lanczos steps (about 2q–3q or more)."),
            ("h_fraction", "Finite-difference step as a fraction of `‖r*‖`."),
            ("shared", "Compute the shared (averaged) Hessian's top eigenvalues."),
            ("overshoot", "DeepFool overshoot."),
            ("max_iter", "DeepFool iteration budget."),
        ],
        headline: &["success_rate", "median_top_eig"],
        better: &[],
        histograms: &["rho", "norm_l2", "eig1"],
        values: &[super::deepfool::VALUES, &[
            ("eig{j}", "j-th largest eigenvalue of P H P/‖∇G‖ at the boundary point (1/length)"),
            ("eig_min", "smallest eigenvalue Lanczos found"),
            ("grad_norm", "‖∇G‖ at the boundary point, G = f_adv − f_k0"),
            ("h", "finite-difference step of the Hessian-vector products"),
            ("adv_pred", "class on the other side of the boundary"),
            ("kappa_random", "curvature along a random unit tangent direction (1/length)"),
        ]],
        units: Units::Whole("the shared curvature and the random tangent directions are drawn over every attacked image at once"),
    };

    fn run(&self, ctx: &Context) -> Result<Output> {
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let d = sm.dim();
        let opts = DeepFoolOptions::l2_unclipped(self.overshoot, self.max_iter, 10);
        let (mut images, outcomes) = super::deepfool::run_all(ctx, &opts, "curvature", Keep::All)?;
        let attacked = super::deepfool::fooled_indices(&images);
        // Boundary points z = x + r* of all attacked images and the
        // gradient of G there.
        let mut pts = Points::new();
        let chunk = (8_000_000 / d.max(1)).max(1);
        for part in attacked.chunks(chunk) {
            let mut x = Vec::with_capacity(part.len() * d);
            let mut outs = Vec::with_capacity(part.len());
            for &i in part {
                x.extend(sm.load(ctx.data, i, 1)?);
                outs.push(&outcomes[&i]);
            }
            pts.add(&sm, &x, &outs, self.h_fraction)?;
        }
        let n = pts.len();
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
        let mut start = vec![0.0f32; n * d];
        for i in 0..n {
            let mut r = ChaCha8Rng::seed_from_u64(ctx.image_seed(attacked[i]));
            for t in 0..d {
                start[i * d + t] = StandardNormal.sample(&mut r);
            }
        }
        pts.to_tangent(0, &mut start);
        let bar = ctx.progress.bar(self.steps as u64, "lanczos");
        let per_image = lanczos_batch(n, d, self.steps, &start, |v| {
            bar.inc(1);
            hvp(&sm, &pts, 0..n, v)
        })?;
        bar.finish_and_clear();
        let mut top = vec![];
        let mut profile = vec![0.0f64; self.q];
        let mut random_kappa = vec![];
        for (i, (vals, _)) in per_image.iter().enumerate() {
            let img = &mut images[attacked[i]];
            img.values.insert("grad_norm", pts.grad_norm[i]);
            img.values.insert("h", pts.h[i]);
            img.values.insert("adv_pred", pts.classes[i].1 as f64);
            for (j, v) in vals.iter().take(self.q).enumerate() {
                img.values.insert(format!("eig{}", j + 1), *v);
                profile[j] += v / n as f64;
            }
            if let Some(v) = vals.first() {
                top.push(*v);
            }
            if let Some(v) = vals.last() {
                img.values.insert("eig_min", *v);
            }
        }
        // Curvature along random unit tangent directions: v'Hv/|∇G| (one extra HVP).
        if n > 0 {
            let mut v: Vec<f32> = (0..n * d)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            pts.to_tangent(0, &mut v);
            for c in v.chunks_mut(d) {
                let nv = l2(c) as f32;
                c.iter_mut().for_each(|e| *e /= nv);
            }
            let hv = hvp(&sm, &pts, 0..n, &v)?;
            for i in 0..n {
                let kappa: f64 = v[i * d..(i + 1) * d]
                    .iter()
                    .zip(&hv[i * d..(i + 1) * d])
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                images[attacked[i]].values.insert("kappa_random", kappa);
                random_kappa.push(kappa);
            }
        }
        let mut shared_vals = vec![];
        if self.shared && n > 0 {
            // H̄ v = mean_i H_i v / |∇G_i|: the same v for every image.
            let (vals, _) = shared_eigen(&sm, &pts, self.steps, rng.random())?;
            shared_vals = vals.into_iter().take(self.q).collect();
        }
        let counts = Counts::of(&images);
        let mut summary = BTreeMap::new();
        summary.insert("n".into(), images.len() as f64);
        summary.insert("n_attacked".into(), (counts.fooled + counts.failed) as f64);
        if let Some(m) = super::median(&top) {
            summary.insert("median_top_eig".into(), m);
        }
        if let Some(m) = super::mean(&top) {
            summary.insert("mean_top_eig".into(), m);
        }
        if let Some(m) = super::mean(&random_kappa) {
            summary.insert("mean_kappa_random".into(), m);
        }
        if let Some(v) = shared_vals.first() {
            summary.insert("shared_top_eig".into(), *v);
        }
        Ok(Output {
            summary,
            images,
            extra: serde_json::json!({
                "profile": profile,
                "shared_eigenvalues": shared_vals,
                "normalisation": "eigenvalues of P H P/|grad G| at z = x + r*, P the projection onto the boundary's tangent space (1/length units)",
            }),
            artifacts: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hessian products over a range of points are those over all points, cut to the range:
    /// `shared_eigen` may take them a part at a time.
    #[test]
    fn hessian_products_over_parts_are_those_over_the_whole() {
        let (model, data) = crate::testutil::digits_on_tract(6, None);
        let sm = SpacedModel::new(&model, &data);
        let d = sm.dim();
        let x = sm.load(&data, 0, 6).unwrap();
        let opts = DeepFoolOptions::l2_unclipped(0.02, 50, 10);
        let outcomes = crate::attack::deepfool::deepfool_batch(&sm, &x, 6, &opts, None).unwrap();
        let mut pts = Points::new();
        pts.add(&sm, &x, &outcomes.iter().collect::<Vec<_>>(), 0.1)
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let v: Vec<f32> = (0..6 * d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let whole = hvp(&sm, &pts, 0..6, &v).unwrap();
        let mut parts = hvp(&sm, &pts, 0..2, &v[..2 * d]).unwrap();
        parts.extend(hvp(&sm, &pts, 2..6, &v[2 * d..]).unwrap());
        assert_eq!(parts, whole);
    }

    #[test]
    fn symmetric_eigen_sorts_eigenvalues_descending() {
        let a = [2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, -1.0];
        let (vals, _) = symmetric_eigen(&a, 3);
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12);
        assert!((vals[2] + 1.0).abs() < 1e-12);
    }

    #[test]
    fn lanczos_finds_the_top_of_a_diagonal_operator() {
        let d = 50;
        let diag: Vec<f32> = (0..d).map(|i| i as f32 / 10.0).collect();
        let start = vec![1.0f32; d];
        let res = lanczos_batch(1, d, 30, &start, |v| {
            Ok(v.iter().zip(&diag).map(|(a, b)| a * b).collect())
        })
        .unwrap();
        let vals = &res[0].0;
        for (j, want) in [4.9, 4.8, 4.7].iter().enumerate() {
            assert!((vals[j] - want).abs() < 1e-3, "{vals:?}");
        }
    }
}

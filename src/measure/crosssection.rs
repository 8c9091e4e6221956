//! `crosssection`: the decision function on 2-D planes through an image
//! (NIPS 2016, ICLR 2018; docs/methods.md, crosssection).
//!
//! For an image `x` with DeepFool perturbation `r*` (L2, no box), the planes
//! `x + α·n + β·v` with `n = r*/‖r*‖` and a unit `v ⟂ n`: a random `v`, and
//! an *adversarial* `v` (the linearised DeepFool direction towards the next
//! closest class, after Gram–Schmidt). `α, β` run over `[−extent, extent]`
//! in units of `‖r*‖`; one batched model call evaluates each plane.
//!
//! Boundary curve: for every `β`, the first `α > 0` where the prediction
//! leaves `k0` (grid scan, then bisection), and a least-squares fit of
//! `α_b(β) ≈ α_b(0) − ½·κ·β²` over `|β| ≤ fit`: `κ > 0` means the boundary
//! bends towards `x`. `κ` is reported in 1/length units of the measured
//! space (`kappa_random`, `kappa_adversarial`) and per unit `‖r*‖`
//! (`kappa_*_rel`). With `--out`, each plane is written as CSV
//! (`alpha,beta,label,margin`) and as a PNG label map with the boundary in
//! black, `x` as a white dot and `x + r*` as a red one.

use std::collections::BTreeMap;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::space::SpacedModel;
use super::Values;
use super::{Better, Artifact, Context, Declaration, ImageResult, Measure, Outcome, Output, Units};
use crate::attack::deepfool::{deepfool_batch_at, DeepFoolOptions, Norm};
use crate::attack::vector::{argmax, l2};
use crate::error::{Error, Result};
use crate::logits::top_k;

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Correctly classified images to section (the first ones in the data).
    pub images: usize,
    /// Grid points per axis.
    pub resolution: usize,
    /// Half-width of the plane, in units of `‖r*‖`.
    pub extent: f64,
    /// Half-width of the `β` range the parabola is fitted on, units of `‖r*‖`.
    pub fit: f64,
    /// Bisection steps refining the boundary crossing per `β`.
    pub bisections: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            images: 1,
            resolution: 21,
            extent: 3.0,
            fit: 2.0,
            bisections: 10,
        }
    }
}

/// One plane through an image.
#[derive(Debug, Clone, Serialize)]
pub struct Plane {
    /// `random` or `adversarial`.
    pub kind: &'static str,
    /// Predicted class per grid point, row-major over (`β`, `α`).
    pub labels: Vec<usize>,
    /// `max_{l≠k0} f_l − f_{k0}` per grid point (positive: not `k0`).
    pub margin: Vec<f32>,
    /// First `α > 0` (units of `‖r*‖`) leaving `k0`, per `β` (`None`: none within the extent).
    pub boundary: Vec<Option<f64>>,
    /// Fitted curvature per unit `‖r*‖` (`None`: too few boundary points).
    pub kappa_rel: Option<f64>,
}

/// Grid coordinates `−extent..=extent`.
fn axis(p: &Params) -> Vec<f64> {
    let r = p.resolution;
    (0..r)
        .map(|i| -p.extent + 2.0 * p.extent * i as f64 / (r - 1) as f64)
        .collect()
}

/// `x + s·(α·n + β·v)` for every (α, β) pair given.
fn points(x: &[f32], n: &[f32], v: &[f32], s: f64, ab: &[(f64, f64)]) -> Vec<f32> {
    let mut out = Vec::with_capacity(ab.len() * x.len());
    for &(a, b) in ab {
        let (a, b) = ((a * s) as f32, (b * s) as f32);
        out.extend(x.iter().zip(n).zip(v).map(|((x, n), v)| x + a * n + b * v));
    }
    out
}

/// Least-squares fit of `α(β) = a − ½·κ·β²`; returns `κ`.
pub fn fit_parabola(betas: &[f64], alphas: &[f64]) -> Option<f64> {
    if betas.len() < 3 {
        return None;
    }
    // Basis (1, −β²/2): normal equations of a 2×2 system.
    let (mut s11, mut s12, mut s22, mut t1, mut t2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (&b, &a) in betas.iter().zip(alphas) {
        let q = -0.5 * b * b;
        s11 += 1.0;
        s12 += q;
        s22 += q * q;
        t1 += a;
        t2 += q * a;
    }
    let det = s11 * s22 - s12 * s12;
    (det.abs() > 1e-12).then(|| (s11 * t2 - s12 * t1) / det)
}

/// Unit vector along `v` minus its component on the unit `n`.
fn orthonormal(mut v: Vec<f32>, n: &[f32]) -> Option<Vec<f32>> {
    let c: f64 = v
        .iter()
        .zip(n)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    v.iter_mut().zip(n).for_each(|(a, b)| *a -= c as f32 * b);
    let norm = l2(&v);
    (norm > 1e-12).then(|| {
        v.into_iter()
            .map(|a| (f64::from(a) / norm) as f32)
            .collect()
    })
}

/// The image a plane goes through: `x`, its class, the unit normal `n`
/// and `‖r*‖` (the plane's unit of length).
struct Origin<'a> {
    x: &'a [f32],
    k0: usize,
    n: &'a [f32],
    scale: f64,
}

/// Evaluates the plane spanned by `o.n` and `v`: labels and margins on the
/// grid, the boundary curve and its curvature.
fn section(
    sm: &SpacedModel,
    o: &Origin,
    v: &[f32],
    p: &Params,
    kind: &'static str,
) -> Result<Plane> {
    let Origin { x, k0, n, scale } = *o;
    let k = sm.classes();
    let ax = axis(p);
    let ab: Vec<(f64, f64)> = ax
        .iter()
        .flat_map(|&b| ax.iter().map(move |&a| (a, b)))
        .collect();
    let logits = sm.logits(&points(x, n, v, scale, &ab), ab.len())?;
    let mut labels = Vec::with_capacity(ab.len());
    let mut margin = Vec::with_capacity(ab.len());
    for row in logits.chunks_exact(k) {
        labels.push(argmax(row));
        let other = row
            .iter()
            .enumerate()
            .filter(|&(l, _)| l != k0)
            .fold(f32::NEG_INFINITY, |m, (_, &v)| m.max(v));
        margin.push(other - row[k0]);
    }
    // Bracket the first crossing along +α for every β, then bisect all at once.
    let r = p.resolution;
    let mut brackets: Vec<Option<(f64, f64)>> = (0..r)
        .map(|bi| {
            let mut prev = 0.0;
            for (ai, &a) in ax.iter().enumerate().filter(|(_, &a)| a > 0.0) {
                if labels[bi * r + ai] != k0 {
                    return Some((prev, a));
                }
                prev = a;
            }
            None
        })
        .collect();
    for _ in 0..p.bisections {
        let open: Vec<usize> = (0..r).filter(|&i| brackets[i].is_some()).collect();
        if open.is_empty() {
            break;
        }
        let mids: Vec<(f64, f64)> = open
            .iter()
            .map(|&i| {
                let (lo, hi) = brackets[i].expect("open bracket");
                (0.5 * (lo + hi), ax[i])
            })
            .collect();
        let lg = sm.logits(&points(x, n, v, scale, &mids), mids.len())?;
        for ((&i, &(mid, _)), row) in open.iter().zip(&mids).zip(lg.chunks_exact(k)) {
            let (lo, hi) = brackets[i].expect("open bracket");
            brackets[i] = Some(if argmax(row) != k0 {
                (lo, mid)
            } else {
                (mid, hi)
            });
        }
    }
    let boundary: Vec<Option<f64>> = brackets.iter().map(|b| b.map(|(_, hi)| hi)).collect();
    let (bs, als): (Vec<f64>, Vec<f64>) = ax
        .iter()
        .zip(&boundary)
        .filter(|(b, a)| b.abs() <= p.fit + 1e-9 && a.is_some())
        .map(|(&b, a)| (b, a.expect("filtered")))
        .unzip();
    Ok(Plane {
        kind,
        labels,
        margin,
        boundary,
        kappa_rel: fit_parabola(&bs, &als),
    })
}

/// A colour per class (distinct hues), the clean class grey.
fn colour(label: usize, k0: usize) -> [u8; 3] {
    if label == k0 {
        return [200, 200, 200];
    }
    let h = (label as f64 * 0.618_033_988_75).fract() * 6.0;
    let x = (1.0 - (h % 2.0 - 1.0).abs()) * 200.0;
    let (c, x) = (200u8, x as u8);
    match h as u32 {
        0 => [c, x, 40],
        1 => [x, c, 40],
        2 => [40, c, x],
        3 => [40, x, c],
        4 => [x, 40, c],
        _ => [c, 40, x],
    }
}

/// Writes the plane as CSV and PNG under `dir`; returns the artifacts.
fn save_plane(
    dir: &Path,
    stem: &str,
    plane: &Plane,
    k0: usize,
    p: &Params,
) -> Result<Vec<Artifact>> {
    let r = p.resolution;
    let ax = axis(p);
    let csv_path = dir.join(format!("{stem}.csv"));
    let mut w = csv::Writer::from_writer(crate::write::create(&csv_path)?);
    w.write_record(["alpha", "beta", "label", "margin"])
        .map_err(|e| Error::io(&csv_path, e.into()))?;
    for bi in 0..r {
        for ai in 0..r {
            let i = bi * r + ai;
            w.write_record([
                ax[ai].to_string(),
                ax[bi].to_string(),
                plane.labels[i].to_string(),
                plane.margin[i].to_string(),
            ])
            .map_err(|e| Error::io(&csv_path, e.into()))?;
        }
    }
    w.flush().map_err(|e| Error::io(&csv_path, e))?;
    // Label map, `cell` pixels per grid point, β up the image.
    let cell = (420 / r).max(4) as u32;
    let side = cell * r as u32;
    let at = |px: u32, py: u32| {
        let ai = (px / cell) as usize;
        let bi = r - 1 - (py / cell) as usize;
        (ai, bi)
    };
    let mut img = image::RgbImage::from_fn(side, side, |px, py| {
        let (ai, bi) = at(px, py);
        image::Rgb(colour(plane.labels[bi * r + ai], k0))
    });
    // Boundary: cells whose right or upper neighbour has another label.
    for py in 0..side {
        for px in 0..side {
            let (ai, bi) = at(px, py);
            let l = plane.labels[bi * r + ai];
            let edge_x = px % cell == cell - 1 && ai + 1 < r && plane.labels[bi * r + ai + 1] != l;
            let edge_y = py % cell == 0 && bi + 1 < r && plane.labels[(bi + 1) * r + ai] != l;
            if edge_x || edge_y {
                img.put_pixel(px, py, image::Rgb([0, 0, 0]));
            }
        }
    }
    let to_px =
        |coord: f64| ((coord + p.extent) / (2.0 * p.extent) * (side - 1) as f64).round() as i64;
    for (cx, cy, rgb) in [(0.0, 0.0, [255, 255, 255]), (1.0, 0.0, [220, 0, 0])] {
        let (x0, y0) = (to_px(cx), side as i64 - 1 - to_px(cy));
        for dy in -3i64..=3 {
            for dx in -3i64..=3 {
                let (x, y) = (x0 + dx, y0 + dy);
                if dx * dx + dy * dy <= 9
                    && (0..side as i64).contains(&x)
                    && (0..side as i64).contains(&y)
                {
                    img.put_pixel(x as u32, y as u32, image::Rgb(rgb));
                }
            }
        }
    }
    let png_path = dir.join(format!("{stem}.png"));
    super::picture::save(&img, &png_path)?;
    Ok(vec![
        Artifact {
            description: format!("{} plane: label and margin per grid point", plane.kind),
            path: format!("{stem}.csv"),
        },
        Artifact {
            description: format!(
                "{} plane: label map (clean class grey, boundary black, x white, x + r* red; alpha to the right, beta up)",
                plane.kind
            ),
            path: format!("{stem}.png"),
        },
    ])
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "crosssection",
        about: "decision regions on the planes (r*, random v) and (r*, second adversarial direction) with the boundary's curvature along each (CSV, PNG with --out)",
        params: &[
            ("images", "Correctly classified images to section (the first ones in the data)."),
            ("resolution", "Grid points per axis."),
            ("extent", "Half-width of the plane, in units of `‖r*‖`."),
            ("fit", "Half-width of the `β` range the parabola is fitted on, units of `‖r*‖`."),
            ("bisections", "Bisection steps refining the boundary crossing per `β`."),
        ],
        headline: &["success_rate", "median_kappa_random", "median_kappa_adversarial"],
        better: &[("success_rate", Better::Lower)],
        histograms: &["norm_l2"],
        values: &[&[
            ("norm_l2", "‖r*‖₂ of the DeepFool point the planes pass through"),
            ("adv_pred", "class DeepFool reached"),
            ("kappa_{direction}", "boundary curvature in the plane (r*, direction), 1/length"),
            ("kappa_{direction}_rel", "the same per unit ‖r*‖"),
        ]],
        units: Units::Whole("the sections are of the first `images` correctly classified images the attack fools"),
    };

    fn validate(&self) -> Result<()> {
        if self.resolution < 3 || self.extent.is_nan() || self.extent <= 0.0 {
            return Err(Error::Config(
                "crosssection: resolution must be ≥ 3 and extent > 0".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let d = sm.dim();
        let k = sm.classes();
        let opts = DeepFoolOptions {
            norm: Norm::L2,
            ..Default::default()
        };
        let mut images = Vec::new();
        let mut sections = Vec::new();
        let mut artifacts = Vec::new();
        let (mut kr, mut ka) = (Vec::new(), Vec::new());
        let bar = ctx.progress.bar(self.images as u64, "crosssection");
        for index in 0..ctx.data.len() {
            if sections.len() >= self.images {
                break;
            }
            let item = &ctx.data.items[index];
            let x = sm.load(ctx.data, index, 1)?;
            let m = opts.candidates.min(k).max(2) - 1;
            let logits = sm.logits(&x, 1)?;
            let tops = top_k(&logits, m + 1);
            let k0 = tops[0];
            let mut values = Values::new();
            if item.label.is_some_and(|l| l != k0) {
                images.push(ImageResult::new(index, item, k0, Outcome::Misclassified, values));
                continue;
            }
            let df = deepfool_batch_at(&sm, &x, &logits, 1, &opts, None)?.remove(0);
            let norm = l2(&df.r);
            if !df.success || norm <= 0.0 {
                images.push(ImageResult::new(index, item, k0, Outcome::Failed, values));
                continue;
            }
            let n: Vec<f32> = df.r.iter().map(|&a| (f64::from(a) / norm) as f32).collect();
            // Random direction.
            let mut rng = ChaCha8Rng::seed_from_u64(ctx.image_seed(index));
            let g: Vec<f32> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
            let random = orthonormal(g, &n)
                .ok_or_else(|| Error::Config("crosssection: degenerate random direction".into()))?;
            // Second adversarial direction: the linearised DeepFool step
            // towards the closest class other than the one r* reached.
            let others: Vec<usize> = tops[1..]
                .iter()
                .copied()
                .filter(|&c| c != df.adv_class)
                .collect();
            let mut cot = vec![0.0f32; others.len() * k];
            for (j, &c) in others.iter().enumerate() {
                cot[j * k + c] = 1.0;
                cot[j * k + k0] = -1.0;
            }
            let (lg, grads) = sm.vjp(&x, 1, &cot, others.len())?;
            let closest = (0..others.len())
                .filter_map(|j| {
                    let w = &grads[j * d..(j + 1) * d];
                    let dist = f64::from((lg[others[j]] - lg[k0]).abs()) / l2(w);
                    dist.is_finite().then_some((dist, j))
                })
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let adversarial = closest
                .and_then(|(_, j)| orthonormal(grads[j * d..(j + 1) * d].to_vec(), &n))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "crosssection: image {index} has no second adversarial direction"
                    ))
                })?;
            let origin = Origin {
                x: &x,
                k0,
                n: &n,
                scale: norm,
            };
            let planes = [
                section(&sm, &origin, &random, self, "random")?,
                section(&sm, &origin, &adversarial, self, "adversarial")?,
            ];
            values.insert("norm_l2", norm);
            values.insert("adv_pred", df.adv_class as f64);
            for plane in &planes {
                if let Some(kappa) = plane.kappa_rel {
                    values.insert(format!("kappa_{}_rel", plane.kind), kappa);
                    values.insert(format!("kappa_{}", plane.kind), kappa / norm);
                    if plane.kind == "random" {
                        kr.push(kappa / norm);
                    } else {
                        ka.push(kappa / norm);
                    }
                }
                if let Some(dir) = ctx.out_dir {
                    let stem = format!("crosssection_{index}_{}", plane.kind);
                    artifacts.extend(save_plane(dir, &stem, plane, k0, self)?);
                }
            }
            images.push(ImageResult::new(index, item, k0, Outcome::Fooled, values));
            sections.push(serde_json::json!({
                "index": index,
                "clean_class": k0,
                "norm_l2": norm,
                "axis": axis(self),
                "planes": planes,
            }));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let mut summary = BTreeMap::new();
        if let Some(m) = super::median(&kr) {
            summary.insert("median_kappa_random".into(), m);
        }
        if let Some(m) = super::median(&ka) {
            summary.insert("median_kappa_adversarial".into(), m);
        }
        Ok(Output {
            summary,
            images,
            extra: serde_json::json!({
                "units": "alpha, beta in units of |r*|; kappa in 1/length of the measured space (kappa_*_rel per unit |r*|)",
                "sections": sections,
            }),
            artifacts,
        })
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parabola_fit_recovers_the_curvature() {
        let betas: Vec<f64> = (-4..=4).map(|i| i as f64 * 0.5).collect();
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - 0.5 * 0.3 * b * b).collect();
        let kappa = fit_parabola(&betas, &alphas).unwrap();
        assert!((kappa - 0.3).abs() < 1e-12, "{kappa}");
        let flat = fit_parabola(&betas, &vec![1.0; betas.len()]).unwrap();
        assert!(flat.abs() < 1e-12);
        assert!(fit_parabola(&[0.0, 1.0], &[1.0, 1.0]).is_none());
    }

    #[test]
    fn orthonormal_removes_the_normal_component() {
        let n = [1.0f32, 0.0, 0.0];
        let v = orthonormal(vec![2.0, 3.0, 4.0], &n).unwrap();
        assert!(v[0].abs() < 1e-7 && (l2(&v) - 1.0).abs() < 1e-6);
        assert!(orthonormal(vec![5.0, 0.0, 0.0], &n).is_none());
    }
}

//! Finite differences over any backend, as closures on batches of flattened inputs.
//!
//! Every function takes `f: Fn(&[f32]) -> Result<Vec<f32>, E>` mapping a row-major batch of
//! `B` inputs `(B, d)` to outputs `(B, K)` (logits, or gradients for the Hessian products), and
//! evaluates all perturbed points in **one** call, so a backend can batch them.
//!
//! **Step size.** [`default_step`] uses `h = 1e-3 · max(1, ‖x‖∞)`: relative to the input scale
//! (a step of 1e-3 on pixels in [0, 255] would be lost in float32 rounding of the logits),
//! never below 1e-3 absolute, and close to the float32 optimum for central differences
//! (`ε_mach^{1/3} ≈ 5e-3` times the scale) while staying small enough that a ReLU network
//! rarely crosses a kink. Differences are accumulated in `f64`. Try several steps
//! (`h·10^{±1}`) when checking gradients of piecewise-linear models.

/// `h = 1e-3 · max(1, ‖x‖∞)` (see the module documentation).
pub fn default_step(x: &[f32]) -> f32 {
    let inf = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    1e-3 * inf.max(1.0)
}

/// Central differences `(g(x + h v) - g(x - h v)) / 2h` for the `D` rows of `dirs` `(D, d)`,
/// from one call of `g` on `2D` rows; returns `(D, K)`, where `K` is `g`'s output width.
fn central<E, F>(g: F, x: &[f32], dirs: &[f32], h: f32) -> Result<Vec<f64>, E>
where
    F: Fn(&[f32]) -> Result<Vec<f32>, E>,
{
    let d = x.len();
    assert!(
        d > 0 && dirs.len().is_multiple_of(d),
        "directions must be (D, d) with d = x.len()"
    );
    let nd = dirs.len() / d;
    let mut rows = Vec::with_capacity(2 * nd * d);
    for v in dirs.chunks(d) {
        rows.extend(x.iter().zip(v).map(|(a, b)| a + h * b));
        rows.extend(x.iter().zip(v).map(|(a, b)| a - h * b));
    }
    let out = g(&rows)?;
    assert!(
        nd > 0 && out.len() % (2 * nd) == 0,
        "output must be (2D, K)"
    );
    let k = out.len() / (2 * nd);
    let mut res = Vec::with_capacity(nd * k);
    for j in 0..nd {
        let plus = &out[2 * j * k..(2 * j + 1) * k];
        let minus = &out[(2 * j + 1) * k..(2 * j + 2) * k];
        res.extend(
            plus.iter()
                .zip(minus)
                .map(|(p, m)| (*p as f64 - *m as f64) / (2.0 * h as f64)),
        );
    }
    Ok(res)
}

/// Jacobian–vector products `J(x) v_j` for the `D` directions `dirs` `(D, d)`, in one call of
/// `f` on `2D` rows. Returns `(D, K)`.
pub fn jvp<E, F>(f: F, x: &[f32], dirs: &[f32], h: f32) -> Result<Vec<f64>, E>
where
    F: Fn(&[f32]) -> Result<Vec<f32>, E>,
{
    central(f, x, dirs, h)
}

/// Finite-difference VJPs `cᵀ J` for the `M` cotangents `cots` `(M, K)`, by central
/// differences along the `d` basis directions, `per_call` of them (`2·per_call` rows) per call
/// of `f`, so that memory stays bounded for large inputs. Returns `(M, d)`.
pub fn vjp<E, F>(f: F, x: &[f32], cots: &[f32], h: f32, per_call: usize) -> Result<Vec<f64>, E>
where
    F: Fn(&[f32]) -> Result<Vec<f32>, E>,
{
    let d = x.len();
    let per_call = per_call.clamp(1, d.max(1));
    let mut out = Vec::new();
    for first in (0..d).step_by(per_call) {
        let dirs = per_call.min(d - first);
        let mut basis = vec![0f32; dirs * d];
        for j in 0..dirs {
            basis[j * d + first + j] = 1.0;
        }
        let jac = central(&f, x, &basis, h)?; // (dirs, K)
        let k = jac.len() / dirs;
        assert!(
            k > 0 && cots.len().is_multiple_of(k),
            "cotangents must be (M, K)"
        );
        if out.is_empty() {
            out = vec![0f64; cots.len() / k * d];
        }
        for (mi, c) in cots.chunks(k).enumerate() {
            for j in 0..dirs {
                out[mi * d + first + j] = jac[j * k..(j + 1) * k]
                    .iter()
                    .zip(c)
                    .map(|(a, c)| a * *c as f64)
                    .sum();
            }
        }
    }
    Ok(out)
}

/// Hessian–vector products `∇²G(x) v_j ≈ (∇G(x + h v_j) − ∇G(x − h v_j)) / 2h` from a closure
/// `grad` returning exact gradients `(B, d)` for inputs `(B, d)`; one call on `2D` rows.
/// Returns `(D, d)`. For ReLU networks pick `h` at the scale of interest (curvature exists only
/// at a finite scale there).
pub fn hvp<E, G>(grad: G, x: &[f32], dirs: &[f32], h: f32) -> Result<Vec<f64>, E>
where
    G: Fn(&[f32]) -> Result<Vec<f32>, E>,
{
    central(grad, x, dirs, h)
}

/// Cosine similarity and relative L2 error `‖a − b‖ / ‖b‖` of `a` against reference `b`.
pub fn compare(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let cos = if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        dot / (na * nb).max(f64::MIN_POSITIVE)
    };
    let rel = if nb == 0.0 { na } else { diff / nb };
    (cos, rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// f(x) = (x0² x1, sin x0 + 3 x1), d = 2, K = 2, applied row-wise.
    fn f(rows: &[f32]) -> Result<Vec<f32>, Infallible> {
        Ok(rows
            .chunks(2)
            .flat_map(|r| {
                let (a, b) = (r[0] as f64, r[1] as f64);
                [(a * a * b) as f32, (a.sin() + 3.0 * b) as f32]
            })
            .collect())
    }

    #[test]
    fn vjp_matches_closed_form_in_any_chunking() {
        let x = [0.7f32, -1.3];
        let h = default_step(&x);
        assert!((h - 1.3e-3).abs() < 1e-9);
        let (a, b) = (0.7f64, -1.3f64);
        for per_call in [1, 2, 5] {
            // Unit cotangents give the Jacobian's rows: ∇f0 = (2ab, a²), ∇f1 = (cos a, 3).
            let j = vjp(f, &x, &[1.0, 0.0, 0.0, 1.0], h, per_call).unwrap();
            let exact = [2.0 * a * b, a * a, a.cos(), 3.0];
            for (got, want) in j.iter().zip(exact) {
                assert!((got - want).abs() < 1e-3, "{got} vs {want}");
            }
            let v = vjp(f, &x, &[1.0, 0.0, 0.5, -2.0], h, per_call).unwrap();
            let want = [
                2.0 * a * b,
                a * a,
                0.5 * 2.0 * a * b - 2.0 * a.cos(),
                0.5 * a * a - 6.0,
            ];
            for (got, want) in v.iter().zip(want) {
                assert!((got - want).abs() < 2e-3, "{got} vs {want}");
            }
        }
    }

    #[test]
    fn jvp_batches_directions() {
        let x = [0.2f32, 0.4];
        let calls = std::cell::Cell::new(0);
        let g = |r: &[f32]| {
            calls.set(calls.get() + 1);
            f(r)
        };
        let out = jvp(g, &x, &[1.0, 1.0, 0.0, 1.0, 1.0, 0.0], 1e-3).unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(out.len(), 6);
        // J v for v = (0, 1): (a², 3).
        assert!((out[2] - 0.04).abs() < 1e-3 && (out[3] - 3.0).abs() < 1e-3);
    }

    #[test]
    fn hvp_of_quadratic_is_exact() {
        // G = ½ xᵀ A x, ∇G = A x, ∇²G v = A v.
        let a = [[2.0f32, 1.0], [1.0, 3.0]];
        let grad = |r: &[f32]| -> Result<Vec<f32>, Infallible> {
            Ok(r.chunks(2)
                .flat_map(|x| {
                    [
                        a[0][0] * x[0] + a[0][1] * x[1],
                        a[1][0] * x[0] + a[1][1] * x[1],
                    ]
                })
                .collect())
        };
        let hv = hvp(grad, &[0.3, -0.1], &[1.0, -1.0], 1e-2).unwrap();
        assert!(
            (hv[0] - 1.0).abs() < 1e-4 && (hv[1] + 2.0).abs() < 1e-4,
            "{hv:?}"
        );
    }

    #[test]
    fn compare_reports_cosine_and_relative_error() {
        let (c, r) = compare(&[1.0, 2.0], &[1.0, 2.0]);
        assert!((c - 1.0).abs() < 1e-12 && r == 0.0);
        let (c, _) = compare(&[1.0, 0.0], &[0.0, 1.0]);
        assert!(c.abs() < 1e-12);
    }
}

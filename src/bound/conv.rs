//! The two convolution kernels of bound propagation: a forward convolution of a whole map
//! (interval bounds: `W·mid` and `|W|·rad`) and the transposed convolution of a batch of
//! local windows of coefficients (linear bounds), both as matrix products.

use super::graph::Window;

/// `y = conv(x)` without bias, in `f64`: `x` `(ci, hi, wi)`, weights `(co, ci/groups, kh,
/// kw)`, `y` `(co, ho, wo)`.
pub fn forward(
    x: &[f64],
    (ci, hi, wi): (usize, usize, usize),
    w: &[f64],
    groups: usize,
    win: &Window,
    (co, ho, wo): (usize, usize, usize),
) -> Vec<f64> {
    let (kh, kw) = win.k;
    let (cig, cog) = (ci / groups, co / groups);
    let kk = cig * kh * kw;
    let p = ho * wo;
    let mut y = vec![0.0f64; co * p];
    let mut cols = vec![0.0f64; kk * p];
    for g in 0..groups {
        cols.iter_mut().for_each(|v| *v = 0.0);
        for c in 0..cig {
            let plane = &x[(g * cig + c) * hi * wi..(g * cig + c + 1) * hi * wi];
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &mut cols[((c * kh + ky) * kw + kx) * p..][..p];
                    for oy in 0..ho {
                        let iy = (oy * win.s.0 + ky * win.d.0) as isize - win.pad.0 as isize;
                        if iy < 0 || iy >= hi as isize {
                            continue;
                        }
                        let src = &plane[iy as usize * wi..][..wi];
                        for ox in 0..wo {
                            let ix = (ox * win.s.1 + kx * win.d.1) as isize - win.pad.1 as isize;
                            if ix >= 0 && ix < wi as isize {
                                row[oy * wo + ox] = src[ix as usize];
                            }
                        }
                    }
                }
            }
        }
        // y_g (cog × p) = W_g (cog × kk) · cols (kk × p)
        unsafe {
            matrixmultiply::dgemm(
                cog,
                kk,
                p,
                1.0,
                w[g * cog * kk..].as_ptr(),
                kk as isize,
                1,
                cols.as_ptr(),
                p as isize,
                1,
                0.0,
                y[g * cog * p..].as_mut_ptr(),
                p as isize,
                1,
            );
        }
    }
    y
}

/// The transposed convolution of one window of coefficients: `v` `(co, h, w)` at the
/// output, returned as `(ci, h2, w2)` at the input with `h2 = (h−1)·s + (kh−1)·d + 1`.
/// `scratch` is reused between calls.
#[allow(clippy::too_many_arguments)]
pub fn backward_window(
    v: &[f32],
    (co, h, w): (usize, usize, usize),
    wts: &[f32],
    ci: usize,
    groups: usize,
    win: &Window,
    out: &mut [f32],
    (h2, w2): (usize, usize),
    scratch: &mut Vec<f32>,
) {
    let (kh, kw) = win.k;
    let (cig, cog) = (ci / groups, co / groups);
    let kk = cig * kh * kw;
    let p = h * w;
    scratch.clear();
    scratch.resize(kk * p, 0.0);
    for g in 0..groups {
        // G (kk × p) = W_gᵀ (kk × cog) · V_g (cog × p)
        unsafe {
            matrixmultiply::sgemm(
                kk,
                cog,
                p,
                1.0,
                wts[g * cog * kk..].as_ptr(),
                1,
                kk as isize,
                v[g * cog * p..].as_ptr(),
                p as isize,
                1,
                0.0,
                scratch.as_mut_ptr(),
                p as isize,
                1,
            );
        }
        for c in 0..cig {
            let plane = &mut out[(g * cig + c) * h2 * w2..][..h2 * w2];
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &scratch[((c * kh + ky) * kw + kx) * p..][..p];
                    for y in 0..h {
                        let iy = y * win.s.0 + ky * win.d.0;
                        let dst = &mut plane[iy * w2..][..w2];
                        for x in 0..w {
                            dst[x * win.s.1 + kx * win.d.1] += row[y * w + x];
                        }
                    }
                }
            }
        }
    }
}

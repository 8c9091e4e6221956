//! The filters the corruptions share, each matching the library call of the reference it
//! replaces: SciPy's Gaussian filter and zoom, OpenCV's 2-D correlation, and the
//! reference's own motion blur.

use super::plane::Plane;

/// How a filter reads outside the plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Border {
    /// The edge value repeats (SciPy `nearest`).
    Nearest,
    /// Mirrored about the edge, edge included: `dcba|abcd|dcba` (SciPy `reflect`).
    Reflect,
    /// Mirrored about the edge pixel: `dcb|abcd|cba` (OpenCV's default, `BORDER_REFLECT_101`).
    Reflect101,
}

impl Border {
    /// The index read for position `i` of a line of `n` values.
    pub(crate) fn index(self, i: isize, n: usize) -> usize {
        let n = n as isize;
        if (0..n).contains(&i) {
            return i as usize;
        }
        let j = match self {
            Border::Nearest => i.clamp(0, n - 1),
            Border::Reflect => {
                let period = 2 * n;
                let m = i.rem_euclid(period);
                if m < n {
                    m
                } else {
                    period - 1 - m
                }
            }
            Border::Reflect101 => {
                if n == 1 {
                    0
                } else {
                    let period = 2 * n - 2;
                    let m = i.rem_euclid(period);
                    if m < n {
                        m
                    } else {
                        period - m
                    }
                }
            }
        };
        j as usize
    }
}

/// Runs `f` compiled for AVX2 where the CPU has it (run-time detection), else as built. The
/// filters' loops add products value by value, each with its own two roundings and no fused
/// multiply-add, so the wider vectors give the same bits, only sooner.
#[inline(always)]
fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2(f) };
    }
    f()
}

/// SciPy's 1-D Gaussian kernel: radius `⌊truncate σ + 0.5⌋`.
pub(crate) fn gaussian_kernel(sigma: f64, truncate: f64) -> Vec<f64> {
    gaussian_weights(sigma, (truncate * sigma + 0.5) as usize)
}

/// Weights `exp(-x²/2σ²)` for `x` in `-radius..=radius`, summing to 1 (SciPy's kernel, and
/// OpenCV's `getGaussianKernel` of size `2 radius + 1`).
pub(crate) fn gaussian_weights(sigma: f64, radius: usize) -> Vec<f64> {
    let r = radius as isize;
    let mut k: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Correlates `plane` with `ky` down the columns, then with `kx` along the rows (SciPy's
/// order); both kernels are centred. Each output value sums its taps in kernel order.
pub(crate) fn separable(plane: &Plane, ky: &[f64], kx: &[f64], border: Border) -> Plane {
    let (w, h) = (plane.width, plane.height);
    let values = wide(
        #[inline(always)]
        || {
            let ry = (ky.len() / 2) as isize;
            let mut cols = Vec::with_capacity(w * h);
            let mut acc = vec![0.0f64; w];
            for y in 0..h {
                acc.fill(0.0);
                for (k, &wt) in ky.iter().enumerate() {
                    let src = border.index(y as isize + k as isize - ry, h);
                    for (a, &v) in acc.iter_mut().zip(&plane.values[src * w..(src + 1) * w]) {
                        *a += wt * f64::from(v);
                    }
                }
                cols.extend(acc.iter().map(|&v| v as f32));
            }
            let rx = (kx.len() / 2) as isize;
            let pw = w + kx.len() - 1;
            let mut padded = vec![0.0f64; pw];
            let mut values = Vec::with_capacity(w * h);
            for row in cols.chunks_exact(w) {
                for (x, p) in padded.iter_mut().enumerate() {
                    *p = f64::from(row[border.index(x as isize - rx, w)]);
                }
                acc.fill(0.0);
                for (k, &wt) in kx.iter().enumerate() {
                    for (a, &v) in acc.iter_mut().zip(&padded[k..k + w]) {
                        *a += wt * v;
                    }
                }
                values.extend(acc.iter().map(|&v| v as f32));
            }
            values
        },
    );
    Plane {
        width: w,
        height: h,
        values,
    }
}

/// SciPy's `gaussian_filter` (as `skimage.filters.gaussian` calls it) with standard deviation
/// `sigma_y` down the columns and `sigma_x` along the rows.
pub(crate) fn gaussian(
    plane: &Plane,
    sigma_y: f64,
    sigma_x: f64,
    truncate: f64,
    border: Border,
) -> Plane {
    separable(
        plane,
        &gaussian_kernel(sigma_y, truncate),
        &gaussian_kernel(sigma_x, truncate),
        border,
    )
}

/// OpenCV's `filter2D`: correlation with the centred square `kernel` (`n × n`, row-major),
/// border `BORDER_REFLECT_101`. The plane is padded once; each output row then takes the
/// kernel's nonzero taps in order, as contiguous runs of the padded rows.
pub(crate) fn correlate2d(plane: &Plane, kernel: &[f64], n: usize) -> Plane {
    let r = n / 2;
    let (w, h) = (plane.width, plane.height);
    let b = Border::Reflect101;
    let pw = w + 2 * r;
    let mut padded = Vec::with_capacity(pw * (h + 2 * r));
    for y in 0..h + 2 * r {
        let yi = b.index(y as isize - r as isize, h);
        for x in 0..pw {
            padded.push(f64::from(plane.at(b.index(x as isize - r as isize, w), yi)));
        }
    }
    // (column offset, row offset) into the padded plane, weight.
    let taps: Vec<(usize, usize, f64)> = kernel
        .iter()
        .enumerate()
        .filter(|(_, &k)| k != 0.0)
        .map(|(i, &k)| (i % n, i / n, k))
        .collect();
    let mut values = Vec::with_capacity(w * h);
    let mut row = vec![0.0f64; w];
    wide(
        #[inline(always)]
        || {
            for y in 0..h {
                row.fill(0.0);
                for &(dx, dy, k) in &taps {
                    let src = &padded[(y + dy) * pw + dx..][..w];
                    for (o, &v) in row.iter_mut().zip(src) {
                        *o += k * v;
                    }
                }
                values.extend(row.iter().map(|&v| v as f32));
            }
        },
    );
    Plane {
        width: w,
        height: h,
        values,
    }
}

/// Linear interpolation at one fractional position of a `w × h` plane: the four neighbours'
/// indices (read through a border) and the weights, for planes that share the position.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bilinear {
    at: [usize; 4],
    fy: f64,
    fx: f64,
}

impl Bilinear {
    pub(crate) fn new(w: usize, h: usize, y: f64, x: f64, border: Border) -> Self {
        let (y0, x0) = (y.floor(), x.floor());
        let (fy, fx) = (y - y0, x - x0);
        let (y0, x0) = (y0 as isize, x0 as isize);
        let at = |yy: isize, xx: isize| border.index(yy, h) * w + border.index(xx, w);
        Bilinear {
            at: [
                at(y0, x0),
                at(y0, x0 + 1),
                at(y0 + 1, x0),
                at(y0 + 1, x0 + 1),
            ],
            fy,
            fx,
        }
    }

    /// The interpolated value of `plane`.
    pub(crate) fn of(&self, plane: &Plane) -> f64 {
        let v = |i: usize| f64::from(plane.values[self.at[i]]);
        let (fy, fx) = (self.fy, self.fx);
        (1.0 - fy) * ((1.0 - fx) * v(0) + fx * v(1)) + fy * ((1.0 - fx) * v(2) + fx * v(3))
    }
}

/// The reference's `clipped_zoom`: the centre `⌈h/z⌉ × ⌈w/z⌉` of the plane scaled by `z` with
/// SciPy's `zoom` (order 1: output size `round(n z)`, corners on corners). The result is at
/// least as large as the plane; the reference crops it at the top left.
pub(crate) fn clipped_zoom(plane: &Plane, z: f64) -> Plane {
    let zoom = Zoom::new(plane.width, plane.height, z);
    let mut values = Vec::with_capacity(zoom.xs.len() * zoom.ys.len());
    zoom.rows(plane, zoom.ys.len(), |_, row| values.extend_from_slice(row));
    Plane {
        width: zoom.xs.len(),
        height: zoom.ys.len(),
        values,
    }
}

/// Adds the top-left `w × h` of [`clipped_zoom`]`(plane, z)` (its values rounded to `f32`, as
/// that plane holds them) to `sum`, without making the zoomed plane.
pub(crate) fn add_clipped_zoom(plane: &Plane, z: f64, sum: &mut [f64]) {
    let zoom = Zoom::new(plane.width, plane.height, z);
    let w = plane.width;
    zoom.rows(plane, plane.height, |y, row| {
        for (s, &v) in sum[y * w..(y + 1) * w].iter_mut().zip(&row[..w]) {
            *s += f64::from(v);
        }
    });
}

/// The sampling grid of a clipped zoom: per output column and row, the two source positions
/// (in the plane) and the weight of the second.
struct Zoom {
    xs: Vec<(usize, usize, f64)>,
    ys: Vec<(usize, usize, f64)>,
}

impl Zoom {
    fn new(w: usize, h: usize, z: f64) -> Self {
        // One axis: the centred crop of `n / z` values, zoomed to `round(crop z)` values whose
        // ends fall on the crop's ends; neighbours past the crop's edge repeat it.
        let axis = |n: usize| {
            let crop = (n as f64 / z).ceil() as usize;
            let start = (n - crop) / 2;
            let out = (crop as f64 * z).round_ties_even() as usize;
            let step = if out > 1 {
                (crop as f64 - 1.0) / (out as f64 - 1.0)
            } else {
                0.0
            };
            (0..out)
                .map(|o| {
                    let t = o as f64 * step;
                    let i = t.floor();
                    let near = |j: isize| start + Border::Nearest.index(j, crop);
                    (near(i as isize), near(i as isize + 1), t - i)
                })
                .collect::<Vec<_>>()
        };
        Zoom {
            xs: axis(w),
            ys: axis(h),
        }
    }

    /// Calls `f(y, row)` with each of the first `rows` output rows.
    fn rows(&self, plane: &Plane, rows: usize, mut f: impl FnMut(usize, &[f32])) {
        let mut row = vec![0.0f32; self.xs.len()];
        wide(
            #[inline(always)]
            || {
                for (y, &(y0, y1, fy)) in self.ys.iter().enumerate().take(rows) {
                    let (a, b) = (
                        &plane.values[y0 * plane.width..][..plane.width],
                        &plane.values[y1 * plane.width..][..plane.width],
                    );
                    for (o, &(x0, x1, fx)) in row.iter_mut().zip(&self.xs) {
                        let at = |r: &[f32], x: usize| f64::from(r[x]);
                        *o = ((1.0 - fy) * ((1.0 - fx) * at(a, x0) + fx * at(a, x1))
                            + fy * ((1.0 - fx) * at(b, x0) + fx * at(b, x1)))
                            as f32;
                    }
                    f(y, &row);
                }
            },
        )
    }
}

/// The reference's `_motion_blur` (its NumPy stand-in for ImageMagick's): a weighted sum of
/// copies of the plane shifted along direction `angle` (degrees), edges repeated, with
/// half-Gaussian weights over `2 radius + 1` steps.
pub(crate) fn motion_blur(plane: &Plane, radius: usize, sigma: f64, angle: f64) -> Plane {
    let width = 2 * radius + 1;
    let gauss: Vec<f64> = (0..width)
        .map(|x| {
            (-((x * x) as f64) / (2.0 * sigma * sigma)).exp()
                / ((2.0 * std::f64::consts::PI).sqrt() * sigma)
        })
        .collect();
    let total: f64 = gauss.iter().sum();
    let (sin, cos) = angle.to_radians().sin_cos();
    let point = (width as f64 * sin, width as f64 * cos);
    let hypot = point.0.hypot(point.1);
    let (w, h) = (plane.width as isize, plane.height as isize);
    let mut out = vec![0.0f64; plane.values.len()];
    wide(
        #[inline(always)]
        || {
            for (i, g) in gauss.iter().enumerate() {
                let dy = -((i as f64 * point.0 / hypot) - 0.5).ceil() as isize;
                let dx = -((i as f64 * point.1 / hypot) - 0.5).ceil() as isize;
                if dy.abs() >= h || dx.abs() >= w {
                    break;
                }
                let weight = g / total;
                // Output columns whose source `x − dx` lies inside the row; the others read its ends.
                let (lo, hi) = (dx.max(0) as usize, (w + dx.min(0)) as usize);
                let w = w as usize;
                for y in 0..h {
                    let sy = (y - dy).clamp(0, h - 1) as usize;
                    let src = &plane.values[sy * w..(sy + 1) * w];
                    let row = &mut out[y as usize * w..(y as usize + 1) * w];
                    let (first, last) = (f64::from(src[0]), f64::from(src[w - 1]));
                    row[..lo].iter_mut().for_each(|o| *o += weight * first);
                    row[hi..].iter_mut().for_each(|o| *o += weight * last);
                    let shifted = &src[(lo as isize - dx) as usize..(hi as isize - dx) as usize];
                    for (o, &v) in row[lo..hi].iter_mut().zip(shifted) {
                        *o += weight * f64::from(v);
                    }
                }
            }
        },
    );
    Plane {
        values: out.into_iter().map(|v| v as f32).collect(),
        ..*plane
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borders_follow_their_libraries() {
        let read = |b: Border| (-3..7).map(|i| b.index(i, 4)).collect::<Vec<_>>();
        assert_eq!(read(Border::Nearest), [0, 0, 0, 0, 1, 2, 3, 3, 3, 3]);
        assert_eq!(read(Border::Reflect), [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
        assert_eq!(read(Border::Reflect101), [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    #[test]
    fn gaussian_kernel_has_scipys_radius_and_sums_to_one() {
        let k = gaussian_kernel(1.0, 4.0);
        assert_eq!(k.len(), 9);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(gaussian_kernel(2.24, 3.0).len(), 15);
    }

    #[test]
    fn clipped_zoom_keeps_a_constant_and_grows_the_plane() {
        let p = Plane::filled(37, 20, 0.25);
        let z = clipped_zoom(&p, 1.3);
        assert!(z.width >= 37 && z.height >= 20);
        assert!(z.values.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    }

    /// The correlations give the bits of a plain loop over every output value and tap, in the
    /// order OpenCV and SciPy sum them: the AVX2 build where the CPU has one, as on any other.
    #[test]
    fn correlations_give_the_bits_of_a_plain_loop() {
        let (w, h) = (23, 17);
        let p = Plane {
            width: w,
            height: h,
            values: (0..w * h)
                .map(|i| ((i * 37 % 101) as f32) / 101.0)
                .collect(),
        };
        let at = |x: isize, y: isize, b: Border| f64::from(p.at(b.index(x, w), b.index(y, h)));
        let n = 5;
        let kernel: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7 % 11) as f64 - 3.0) / 17.0)
            .collect();
        let got = correlate2d(&p, &kernel, n);
        let ky = [0.2, 0.5, 0.3];
        let kx = [0.1, 0.15, 0.5, 0.15, 0.1];
        let sep = separable(&p, &ky, &kx, Border::Nearest);
        for y in 0..h as isize {
            for x in 0..w as isize {
                let mut want = 0.0;
                for (i, &k) in kernel.iter().enumerate().filter(|(_, &k)| k != 0.0) {
                    let (dx, dy) = ((i % n) as isize - 2, (i / n) as isize - 2);
                    want += k * at(x + dx, y + dy, Border::Reflect101);
                }
                assert_eq!(
                    got.at(x as usize, y as usize),
                    want as f32,
                    "2-D at {x},{y}"
                );
                let column = |x: isize| {
                    let mut c = 0.0;
                    for (k, &wt) in ky.iter().enumerate() {
                        c += wt * at(x, y + k as isize - 1, Border::Nearest);
                    }
                    f64::from(c as f32)
                };
                let mut want = 0.0;
                for (k, &wt) in kx.iter().enumerate() {
                    want += wt * column(x + k as isize - 2);
                }
                assert_eq!(
                    sep.at(x as usize, y as usize),
                    want as f32,
                    "separable at {x},{y}"
                );
            }
        }
    }

    #[test]
    fn motion_blur_keeps_a_constant() {
        let p = Plane::filled(16, 12, 0.5);
        let b = motion_blur(&p, 5, 3.0, 30.0);
        assert!(b.values.iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }
}

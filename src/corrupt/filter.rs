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
/// order); both kernels are centred.
pub(crate) fn separable(plane: &Plane, ky: &[f64], kx: &[f64], border: Border) -> Plane {
    let (w, h) = (plane.width, plane.height);
    let ry = (ky.len() / 2) as isize;
    let cols = Plane::from_fn(w, h, |x, y| {
        let s: f64 = ky
            .iter()
            .enumerate()
            .map(|(k, &wt)| {
                wt * f64::from(plane.at(x, border.index(y as isize + k as isize - ry, h)))
            })
            .sum();
        s as f32
    });
    let rx = (kx.len() / 2) as isize;
    Plane::from_fn(w, h, |x, y| {
        let s: f64 = kx
            .iter()
            .enumerate()
            .map(|(k, &wt)| {
                wt * f64::from(cols.at(border.index(x as isize + k as isize - rx, w), y))
            })
            .sum();
        s as f32
    })
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
/// border `BORDER_REFLECT_101`.
pub(crate) fn correlate2d(plane: &Plane, kernel: &[f64], n: usize) -> Plane {
    let r = (n / 2) as isize;
    let taps: Vec<(isize, isize, f64)> = kernel
        .iter()
        .enumerate()
        .filter(|(_, &k)| k != 0.0)
        .map(|(i, &k)| ((i % n) as isize - r, (i / n) as isize - r, k))
        .collect();
    let b = Border::Reflect101;
    Plane::from_fn(plane.width, plane.height, |x, y| {
        let s: f64 = taps
            .iter()
            .map(|&(dx, dy, k)| {
                let xi = b.index(x as isize + dx, plane.width);
                let yi = b.index(y as isize + dy, plane.height);
                k * f64::from(plane.at(xi, yi))
            })
            .sum();
        s as f32
    })
}

/// The value of `plane` at fractional row `y`, column `x` by linear interpolation; the
/// neighbours are read through `border`.
pub(crate) fn bilinear(plane: &Plane, y: f64, x: f64, border: Border) -> f64 {
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let (y0, x0) = (y0 as isize, x0 as isize);
    let at = |yy: isize, xx: isize| {
        f64::from(plane.at(
            border.index(xx, plane.width),
            border.index(yy, plane.height),
        ))
    };
    (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
        + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1))
}

/// The reference's `clipped_zoom`: the centre `⌈h/z⌉ × ⌈w/z⌉` of the plane scaled by `z` with
/// SciPy's `zoom` (order 1: output size `round(n z)`, corners on corners). The result is at
/// least as large as the plane; the reference crops it at the top left.
pub(crate) fn clipped_zoom(plane: &Plane, z: f64) -> Plane {
    let (h, w) = (plane.height, plane.width);
    let ch = (h as f64 / z).ceil() as usize;
    let cw = (w as f64 / z).ceil() as usize;
    let (top, left) = ((h - ch) / 2, (w - cw) / 2);
    let oh = (ch as f64 * z).round_ties_even() as usize;
    let ow = (cw as f64 * z).round_ties_even() as usize;
    let step = |n: usize, o: usize| {
        if o > 1 {
            (n as f64 - 1.0) / (o as f64 - 1.0)
        } else {
            0.0
        }
    };
    let (sy, sx) = (step(ch, oh), step(cw, ow));
    let crop = Plane::from_fn(cw, ch, |x, y| plane.at(left + x, top + y));
    Plane::from_fn(ow, oh, |x, y| {
        bilinear(&crop, y as f64 * sy, x as f64 * sx, Border::Nearest) as f32
    })
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
    for (i, g) in gauss.iter().enumerate() {
        let dy = -((i as f64 * point.0 / hypot) - 0.5).ceil() as isize;
        let dx = -((i as f64 * point.1 / hypot) - 0.5).ceil() as isize;
        if dy.abs() >= h || dx.abs() >= w {
            break;
        }
        let weight = g / total;
        for y in 0..h {
            let sy = (y - dy).clamp(0, h - 1) as usize;
            for x in 0..w {
                let sx = (x - dx).clamp(0, w - 1) as usize;
                out[(y * w + x) as usize] += weight * f64::from(plane.at(sx, sy));
            }
        }
    }
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

    #[test]
    fn motion_blur_keeps_a_constant() {
        let p = Plane::filled(16, 12, 0.5);
        let b = motion_blur(&p, 5, 3.0, 30.0);
        assert!(b.values.iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }
}

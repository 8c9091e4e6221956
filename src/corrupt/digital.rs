//! Digital corruptions: brightness, contrast, saturation, elastic transform, pixelation.

use super::filter::{self, Border};
use super::plane::to_u8;
use super::{Plane, RgbPlanes, Rng};

/// Value (HSV) raised by `c`.
pub(crate) fn brightness(image: &RgbPlanes, s: usize) -> RgbPlanes {
    brightness_by(image, [0.1, 0.2, 0.3, 0.4, 0.5][s])
}

/// Value (HSV) raised by any `c` (lowered when negative), clipped to `[0, 1]`.
pub(crate) fn brightness_by(image: &RgbPlanes, c: f64) -> RgbPlanes {
    image.map_pixels(|rgb| {
        let [h, sat, v] = rgb_to_hsv(rgb);
        hsv_to_rgb([h, sat, (v + c).clamp(0.0, 1.0)])
    })
}

/// Saturation (HSV) scaled by `a` and raised by `b`.
pub(crate) fn saturate(image: &RgbPlanes, s: usize) -> RgbPlanes {
    let (a, b) = [(0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)][s];
    image.map_pixels(|rgb| {
        let [h, sat, v] = rgb_to_hsv(rgb);
        hsv_to_rgb([h, (sat * a + b).clamp(0.0, 1.0), v])
    })
}

/// Values pulled towards their channel's mean: `(x - m) c + m`.
pub(crate) fn contrast(image: &RgbPlanes, s: usize) -> RgbPlanes {
    let c = [0.4, 0.3, 0.2, 0.1, 0.05][s];
    image.map_planes(|p| {
        let m = p.values.iter().map(|&v| f64::from(v)).sum::<f64>() / p.values.len() as f64;
        p.map(|v| ((f64::from(v) - m) * c + m).clamp(0.0, 1.0) as f32)
    })
}

/// scikit-image's `rgb2hsv` of one pixel (ties: blue over green over red).
fn rgb_to_hsv([r, g, b]: [f32; 3]) -> [f64; 3] {
    let (r, g, b) = (f64::from(r), f64::from(g), f64::from(b));
    let v = r.max(g).max(b);
    let delta = v - r.min(g).min(b);
    if delta == 0.0 {
        return [0.0, 0.0, v];
    }
    let h = if b == v {
        4.0 + (r - g) / delta
    } else if g == v {
        2.0 + (b - r) / delta
    } else {
        (g - b) / delta
    };
    [(h / 6.0).rem_euclid(1.0), delta / v, v]
}

/// scikit-image's `hsv2rgb` of one pixel.
fn hsv_to_rgb([h, s, v]: [f64; 3]) -> [f32; 3] {
    let hi = (h * 6.0).floor();
    let f = h * 6.0 - hi;
    let p = v * (1.0 - s);
    let q = v * (1.0 - f * s);
    let t = v * (1.0 - (1.0 - f) * s);
    let rgb = match (hi as i64).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    };
    rgb.map(|x| x.clamp(0.0, 1.0) as f32)
}

/// Every pixel moved by a smooth random field: uniform noise blurred with a Gaussian of
/// 1 % of the image's sides, scaled by `alpha`, then sampled bilinearly (mirrored edges).
pub(crate) fn elastic(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    let alpha = 250.0 * [0.05, 0.065, 0.085, 0.1, 0.12][s];
    let (w, h) = (image.width(), image.height());
    // The reference bounds both fields by the height.
    let max_d = h as f64 * 0.005;
    let mut field = || {
        let noise = Plane::from_fn(w, h, |_, _| rng.uniform(-max_d, max_d) as f32);
        filter::gaussian(
            &noise,
            h as f64 * 0.01,
            w as f64 * 0.01,
            3.0,
            Border::Reflect,
        )
        .map(|v| (f64::from(v) * alpha) as f32)
    };
    let dx = field();
    let dy = field();
    // Where each pixel samples, found once for the three planes.
    let mut samples = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let sy = reflect_coordinate(y as f64 + f64::from(dy.at(x, y)), h);
            let sx = reflect_coordinate(x as f64 + f64::from(dx.at(x, y)), w);
            samples.push(filter::Bilinear::new(w, h, sy, sx, Border::Reflect));
        }
    }
    image.map_planes(|p| Plane {
        values: samples
            .iter()
            .map(|b| (b.of(p) as f32).clamp(0.0, 1.0))
            .collect(),
        ..*p
    })
}

/// A coordinate outside `[-0.5, n - 0.5]` mirrored back into it (SciPy's `reflect`).
fn reflect_coordinate(c: f64, n: usize) -> f64 {
    let period = 2.0 * n as f64;
    let m = (c + 0.5).rem_euclid(period);
    (if m < n as f64 { m } else { period - m }) - 0.5
}

/// Pillow's box downscale to `⌊c w⌋ × ⌊c h⌋` and nearest-neighbour upscale back, on the
/// 8-bit image.
pub(crate) fn pixelate(image: &RgbPlanes, s: usize) -> RgbPlanes {
    let c = [0.6, 0.5, 0.4, 0.3, 0.25][s];
    let (w, h) = (image.width(), image.height());
    // At least one pixel: the reference refuses images under 32 pixels, georob does not.
    let (sw, sh) = (
        ((w as f64 * c) as usize).max(1),
        ((h as f64 * c) as usize).max(1),
    );
    image.map_planes(|p| {
        let bytes: Vec<u8> = p.values.iter().map(|&v| to_u8(v)).collect();
        let small = box_resize(&bytes, w, h, sw, sh);
        let xs = nearest_table(sw, w);
        let ys = nearest_table(sh, h);
        Plane::from_fn(w, h, |x, y| f32::from(small[ys[y] * sw + xs[x]]) / 255.0)
    })
}

/// Pillow's `NEAREST` source index of each of `out` positions from `len` (its
/// `ImagingScaleAffine`: the position accumulates `len / out` per step).
fn nearest_table(len: usize, out: usize) -> Vec<usize> {
    let step = len as f64 / out as f64;
    let mut pos = step * 0.5;
    (0..out)
        .map(|_| {
            let i = (pos as usize).min(len - 1);
            pos += step;
            i
        })
        .collect()
}

/// Pillow's `BOX` resampling of an 8-bit plane: horizontal pass, then vertical, each with
/// its 22-bit fixed-point weights and rounding.
fn box_resize(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    let horizontal = box_weights(w, ow);
    let mut tmp = vec![0u8; ow * h];
    for y in 0..h {
        for (x, (start, ks)) in horizontal.iter().enumerate() {
            tmp[y * ow + x] = weighted(
                ks.iter()
                    .enumerate()
                    .map(|(k, &wt)| (src[y * w + start + k], wt)),
            );
        }
    }
    let vertical = box_weights(h, oh);
    let mut out = vec![0u8; ow * oh];
    for (y, (start, ks)) in vertical.iter().enumerate() {
        for x in 0..ow {
            out[y * ow + x] = weighted(
                ks.iter()
                    .enumerate()
                    .map(|(k, &wt)| (tmp[(start + k) * ow + x], wt)),
            );
        }
    }
    out
}

const PRECISION_BITS: u32 = 22;

/// The fixed-point sum of `(value, weight)` pairs, rounded and clipped to 8 bits.
fn weighted(terms: impl Iterator<Item = (u8, i32)>) -> u8 {
    let sum: i64 = (1i64 << (PRECISION_BITS - 1))
        + terms
            .map(|(v, wt)| i64::from(v) * i64::from(wt))
            .sum::<i64>();
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `precompute_coeffs` for the box filter: for each output position, the first
/// input index and the fixed-point weights.
fn box_weights(len: usize, out: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = len as f64 / out as f64;
    let filterscale = scale.max(1.0);
    let support = 0.5 * filterscale;
    (0..out)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let xmin = ((centre - support + 0.5) as isize).max(0) as usize;
            let xmax = ((centre + support + 0.5) as usize).min(len);
            let raw: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = (x as f64 - centre + 0.5) / filterscale;
                    if t > -0.5 && t <= 0.5 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = raw.iter().sum();
            let fixed = raw
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    (0.5 + k * f64::from(1u32 << PRECISION_BITS)) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_round_trip_is_exact_enough() {
        for rgb in [
            [0.2, 0.4, 0.9],
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.0, 0.0, 0.0],
            [0.3, 0.9, 0.1],
        ] {
            let back = hsv_to_rgb(rgb_to_hsv(rgb));
            for (a, b) in rgb.iter().zip(back) {
                assert!((a - b).abs() < 1e-6, "{rgb:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn box_resize_averages_blocks() {
        let src: Vec<u8> = vec![0, 10, 20, 30, 40, 50, 60, 70];
        assert_eq!(box_resize(&src, 4, 2, 2, 1), vec![25, 45]);
        assert_eq!(nearest_table(2, 4), vec![0, 0, 1, 1]);
    }

    #[test]
    fn reflected_coordinates_stay_inside() {
        assert_eq!(reflect_coordinate(-1.0, 4), 0.0);
        assert_eq!(reflect_coordinate(4.0, 4), 3.0);
        assert_eq!(reflect_coordinate(2.25, 4), 2.25);
    }
}

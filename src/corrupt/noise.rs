//! Noise: Gaussian, shot (Poisson), impulse (salt and pepper) and speckle, drawn
//! independently for every value of every channel, in the reference's order (row, column,
//! channel), so that a seed draws the reference's noise.

use super::stream::NumpyGenerator;
use super::{RgbPlanes, Rng};

/// `x + N(0, c²)`.
pub(crate) fn gaussian(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    gaussian_by(image, [0.08, 0.12, 0.18, 0.26, 0.38][s], rng)
}

/// `x + N(0, c²)` for any `c`.
pub(crate) fn gaussian_by(image: &RgbPlanes, c: f64, rng: &mut Rng) -> RgbPlanes {
    map_in_order(image, |v| {
        (f64::from(v) + rng.normal(0.0, c)).clamp(0.0, 1.0) as f32
    })
}

/// `Poisson(c x) / c`.
pub(crate) fn shot(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    shot_by(image, [60.0, 25.0, 12.0, 5.0, 3.0][s], rng)
}

/// `Poisson(c x) / c` for any `c`.
pub(crate) fn shot_by(image: &RgbPlanes, c: f64, rng: &mut Rng) -> RgbPlanes {
    map_in_order(image, |v| {
        let k = rng.poisson(f64::from(v).max(0.0) * c) as f64;
        (k / c).clamp(0.0, 1.0) as f32
    })
}

/// A fraction `c` of the values set to 0 or 1 with equal odds: scikit-image's
/// `random_noise(mode="s&p")`, which draws every value's "flipped" (`u ≤ c`), then every
/// value's "salted" (`u ≤ 0.5`), in the image's order, from `np.random.default_rng(seed)`. The
/// reference passes no seed; given one (`seed`, NumPy's 32 bits of the image's), it draws this.
pub(crate) fn impulse(image: &RgbPlanes, s: usize, seed: u32) -> RgbPlanes {
    let c = [0.03, 0.06, 0.09, 0.17, 0.27][s];
    let rng = &mut NumpyGenerator::new(u64::from(seed));
    let values = image.planes.iter().map(|p| p.values.len()).sum();
    let flipped: Vec<bool> = (0..values).map(|_| rng.random() <= c).collect();
    let mut flips = flipped.into_iter();
    map_in_order(image, |v| {
        let salted = rng.random() <= 0.5;
        match (flips.next().unwrap_or(false), salted) {
            (true, true) => 1.0,
            (true, false) => 0.0,
            _ => v,
        }
    })
}

/// `x + x N(0, c²)`.
pub(crate) fn speckle(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    let c = [0.15, 0.2, 0.35, 0.45, 0.6][s];
    map_in_order(image, |v| {
        let x = f64::from(v);
        (x + x * rng.normal(0.0, c)).clamp(0.0, 1.0) as f32
    })
}

/// `f` applied to every value, pixel by pixel in rows, the three channels of a pixel in turn
/// (the order of an `(H, W, 3)` array, the reference's).
fn map_in_order(image: &RgbPlanes, mut f: impl FnMut(f32) -> f32) -> RgbPlanes {
    let mut out = image.clone();
    for i in 0..image.planes[0].values.len() {
        for (o, p) in out.planes.iter_mut().zip(&image.planes) {
            o.values[i] = f(p.values[i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's `gaussian_noise` at severity 3 on a 2×2 image after
    /// `np.random.seed(5)` (printed by imagecorruptions 1.1.2 on NumPy 2.4.6).
    #[test]
    fn gaussian_noise_is_the_references_for_the_same_seed() {
        let x = image::RgbImage::from_raw(
            2,
            2,
            vec![10, 200, 30, 40, 50, 60, 70, 80, 90, 100, 110, 255],
        )
        .unwrap();
        let out = gaussian(&RgbPlanes::from_rgb8(&x), 2, &mut Rng::new(5)).to_rgb8();
        assert_eq!(
            out.into_raw(),
            [30, 184, 141, 28, 55, 132, 28, 52, 98, 84, 55, 245]
        );
    }

    /// scikit-image 0.26's `random_noise(x / 255, mode="s&p", amount=0.27, rng=seed)` on a 3×3
    /// image (impulse noise at severity 5), as printed there.
    #[test]
    fn impulse_noise_is_scikit_images_for_the_same_seed() {
        let x: Vec<u8> = (0..27).map(|i| 7 + 9 * i).collect();
        let x = RgbPlanes::from_rgb8(&image::RgbImage::from_raw(3, 3, x).unwrap());
        for (seed, want) in [
            (
                11,
                [
                    0, 16, 25, 255, 255, 52, 0, 255, 79, 88, 97, 106, 115, 124, 255, 142, 151, 160,
                    169, 178, 187, 255, 205, 214, 223, 232, 255,
                ],
            ),
            (
                21,
                [
                    7, 16, 25, 0, 43, 52, 61, 0, 79, 88, 255, 106, 115, 255, 133, 142, 0, 0, 169,
                    178, 187, 196, 205, 0, 0, 232, 241,
                ],
            ),
        ] {
            assert_eq!(
                impulse(&x, 4, seed).to_rgb8().into_raw(),
                want,
                "seed {seed}"
            );
        }
    }
}

//! Noise: Gaussian, shot (Poisson), impulse (salt and pepper) and speckle, drawn
//! independently for every value of every channel, as the reference does.

use rand::Rng as _;
use rand_distr::{Distribution, Poisson, StandardNormal};

use super::{RgbPlanes, Rng};

/// `x + N(0, c²)`.
pub(crate) fn gaussian(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    gaussian_by(image, [0.08, 0.12, 0.18, 0.26, 0.38][s], rng)
}

/// `x + N(0, c²)` for any `c`.
pub(crate) fn gaussian_by(image: &RgbPlanes, c: f64, rng: &mut Rng) -> RgbPlanes {
    image.map(|v| {
        let n: f64 = rng.sample(StandardNormal);
        (f64::from(v) + c * n).clamp(0.0, 1.0) as f32
    })
}

/// `Poisson(c x) / c`.
pub(crate) fn shot(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    shot_by(image, [60.0, 25.0, 12.0, 5.0, 3.0][s], rng)
}

/// `Poisson(c x) / c` for any `c`.
pub(crate) fn shot_by(image: &RgbPlanes, c: f64, rng: &mut Rng) -> RgbPlanes {
    image.map(|v| {
        // Poisson::new refuses λ = 0, where no photon arrives.
        let k = Poisson::new(f64::from(v) * c).map_or(0.0, |d| d.sample(rng));
        (k / c).clamp(0.0, 1.0) as f32
    })
}

/// A fraction `c` of the values set to 0 or 1 with equal odds (scikit-image's `s&p`).
pub(crate) fn impulse(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    let c = [0.03, 0.06, 0.09, 0.17, 0.27][s];
    image.map(|v| {
        let flipped = rng.random::<f64>() < c;
        let salted = rng.random::<f64>() < 0.5;
        match (flipped, salted) {
            (true, true) => 1.0,
            (true, false) => 0.0,
            _ => v,
        }
    })
}

/// `x + x N(0, c²)`.
pub(crate) fn speckle(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    let c = [0.15, 0.2, 0.35, 0.45, 0.6][s];
    image.map(|v| {
        let x = f64::from(v);
        let n: f64 = rng.sample(StandardNormal);
        (x + x * c * n).clamp(0.0, 1.0) as f32
    })
}

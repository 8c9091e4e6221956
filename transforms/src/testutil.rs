//! Helpers shared by the unit tests: a seeded generator, smooth test images, error measures.

use crate::layout::{ImageLayout, ImageShape};

/// Both layouts, for tests that loop over them.
pub(crate) const LAYOUTS: [ImageLayout; 2] = [ImageLayout::Nchw, ImageLayout::Nhwc];

/// A small batch of two RGB images that is not square.
pub(crate) const SHAPE: ImageShape = ImageShape {
    n: 2,
    c: 3,
    h: 16,
    w: 20,
};

/// SplitMix64: a tiny, seeded, reproducible generator.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }
}

/// A smooth batch: per image and channel, a constant plus three Gaussian blobs
/// (σ between 2.5 and 5 pixels) with random centres inside the image.
pub(crate) fn gaussian_images(shape: ImageShape, layout: ImageLayout, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut out = vec![0.0f32; shape.len()];
    for i in 0..shape.n {
        for c in 0..shape.c {
            let blobs: Vec<[f64; 4]> = (0..3)
                .map(|_| {
                    [
                        rng.uniform(0.3, 1.0),
                        rng.uniform(0.0, shape.w as f64 - 1.0),
                        rng.uniform(0.0, shape.h as f64 - 1.0),
                        rng.uniform(2.5, 5.0),
                    ]
                })
                .collect();
            for y in 0..shape.h {
                for x in 0..shape.w {
                    let v: f64 = 0.1
                        + blobs
                            .iter()
                            .map(|[a, bx, by, s]| {
                                let d2 = (x as f64 - bx).powi(2) + (y as f64 - by).powi(2);
                                a * (-d2 / (2.0 * s * s)).exp()
                            })
                            .sum::<f64>();
                    out[layout.index(&shape, i, c, y, x)] = v as f32;
                }
            }
        }
    }
    out
}

/// Uniform random values in `[-1, 1)`.
pub(crate) fn random_values(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

/// [`random_values`] rounded to `f32`.
pub(crate) fn random_f32(len: usize, seed: u64) -> Vec<f32> {
    random_values(len, seed).iter().map(|&v| v as f32).collect()
}

/// Coordinate-wise central differences `(f(x + step·eₖ) − f(x − step·eₖ)) / 2·step`: the
/// gradient of `f` at `x`.
pub(crate) fn central_gradient(x: &[f64], step: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    (0..x.len())
        .map(|k| {
            let at = |delta: f64| {
                let mut moved = x.to_vec();
                moved[k] += delta;
                f(&moved)
            };
            (at(step) - at(-step)) / (2.0 * step)
        })
        .collect()
}

/// `‖a − b‖₂ / ‖b‖₂` (with a floor on the denominator).
pub(crate) fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    diff.sqrt() / norm.sqrt().max(1e-12)
}

/// Euclidean inner product.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Widens `f32` values.
pub(crate) fn to_f64(a: &[f32]) -> Vec<f64> {
    a.iter().map(|&v| v as f64).collect()
}

//! Blurs: defocus, glass, motion, zoom and Gaussian.

use super::filter::{self, Border};
use super::plane::to_u8;
use super::{Plane, RgbPlanes, Rng};

/// Correlation with an anti-aliased disk (OpenCV's `filter2D`).
pub(crate) fn defocus(image: &RgbPlanes, s: usize) -> RgbPlanes {
    let (radius, alias_blur) = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][s];
    let (kernel, n) = disk(radius, alias_blur);
    image.map_planes(|p| filter::correlate2d(p, &kernel, n).map(|v| v.clamp(0.0, 1.0)))
}

/// The reference's `disk`: the pixels within `radius` of the centre of a square of side 17
/// (or `2 radius + 1` above radius 8), normalised, then blurred with OpenCV's
/// `GaussianBlur` (3×3, or 5×5 above radius 8) of standard deviation `alias_blur`.
fn disk(radius: isize, alias_blur: f64) -> (Vec<f64>, usize) {
    let (half, blur_radius) = if radius <= 8 { (8, 1) } else { (radius, 2) };
    let n = (2 * half + 1) as usize;
    let inside = Plane::from_fn(n, n, |x, y| {
        let (dx, dy) = (x as isize - half, y as isize - half);
        if dx * dx + dy * dy <= radius * radius {
            1.0
        } else {
            0.0
        }
    });
    let count: f32 = inside.values.iter().sum();
    let aliased = inside.map(|v| v / count);
    let g = filter::gaussian_weights(alias_blur, blur_radius);
    let blurred = filter::separable(&aliased, &g, &g, Border::Reflect101);
    (blurred.values.iter().map(|&v| f64::from(v)).collect(), n)
}

/// Gaussian blur, 8-bit truncation, each interior pixel (bottom-right to top-left) replaced
/// by a random one within `delta`, Gaussian blur again.
///
/// The reference means to swap the two pixels, but its NumPy tuple assignment of two pixel
/// views copies the neighbour into the pixel and leaves the neighbour as it was; ImageNet-C
/// was made that way, and so is this.
pub(crate) fn glass(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    let (sigma, delta, iterations) = [
        (0.7, 1, 2),
        (0.9, 2, 1),
        (1.0, 2, 3),
        (1.1, 3, 2),
        (1.5, 4, 2),
    ][s];
    let blur = |p: &Plane| filter::gaussian(p, sigma, sigma, 4.0, Border::Nearest);
    let mut x = image.map_planes(|p| blur(p).map(|v| f32::from(to_u8(v)) / 255.0));
    let (w, h) = (x.width() as isize, x.height() as isize);
    for _ in 0..iterations {
        for row in (delta + 1..=h - delta).rev() {
            for col in (delta + 1..=w - delta).rev() {
                let dx = rng.randint(-delta as i64, delta as i64) as isize;
                let dy = rng.randint(-delta as i64, delta as i64) as isize;
                let a = (row * w + col) as usize;
                let b = ((row + dy) * w + col + dx) as usize;
                for plane in &mut x.planes {
                    plane.values[a] = plane.values[b];
                }
            }
        }
    }
    x.map_planes(|p| blur(p).map(|v| v.clamp(0.0, 1.0)))
}

/// Motion blur along a direction drawn uniformly in ±45°.
pub(crate) fn motion(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    let (radius, sigma) = [(10, 3.0), (15, 5.0), (15, 8.0), (15, 12.0), (20, 15.0)][s];
    let angle = rng.uniform(-45.0, 45.0);
    image.map_planes(|p| filter::motion_blur(p, radius, sigma, angle).map(|v| v.clamp(0.0, 1.0)))
}

/// The mean of the image and its centred zooms by `1, 1 + step, …` (the reference's
/// `np.arange` ranges, whose floating-point ends give 12, 16, 11, 13 and 11 factors).
pub(crate) fn zoom(image: &RgbPlanes, s: usize) -> RgbPlanes {
    let (count, step) = [(12, 0.01), (16, 0.01), (11, 0.02), (13, 0.02), (11, 0.03)][s];
    image.map_planes(|p| {
        let mut sum: Vec<f64> = p.values.iter().map(|&v| f64::from(v)).collect();
        for i in 0..count {
            filter::add_clipped_zoom(p, 1.0 + i as f64 * step, &mut sum);
        }
        Plane {
            values: sum
                .into_iter()
                .map(|v| ((v / (count + 1) as f64) as f32).clamp(0.0, 1.0))
                .collect(),
            ..*p
        }
    })
}

/// Gaussian blur of standard deviation 1, 2, 3, 4 or 6 pixels.
pub(crate) fn gaussian(image: &RgbPlanes, s: usize) -> RgbPlanes {
    let sigma = [1.0, 2.0, 3.0, 4.0, 6.0][s];
    image.map_planes(|p| {
        filter::gaussian(p, sigma, sigma, 4.0, Border::Nearest).map(|v| v.clamp(0.0, 1.0))
    })
}

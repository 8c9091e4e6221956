//! Weather: snow, frost and fog.

use super::filter::{self, Border};
use super::{Plane, RgbPlanes, Rng};

/// Snow flakes (zoomed, thresholded, motion-blurred Gaussian noise, added twice, once
/// rotated by 180°) over an image pulled towards its whitened grey.
pub(crate) fn snow(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    let (loc, scale, zoom, threshold, radius, sigma, keep) = [
        (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
        (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
        (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
    ][s];
    let (w, h) = (image.width(), image.height());
    let noise = Plane::from_fn(w, h, |_, _| rng.normal(loc, scale) as f32);
    let flakes = filter::clipped_zoom(&noise, zoom).map(|v| {
        if f64::from(v) < threshold {
            0.0
        } else {
            v.clamp(0.0, 1.0)
        }
    });
    let angle = rng.uniform(-135.0, -45.0);
    let flakes = filter::motion_blur(&flakes, radius, sigma, angle)
        .map(|v| (v * 255.0).round_ties_even() / 255.0)
        .crop(w, h);
    let keep = keep as f32;
    let whitened = image.map_pixels(|[r, g, b]| {
        let grey = (0.299 * r + 0.587 * g + 0.114 * b) * 1.5 + 0.5;
        [r, g, b].map(|v| keep * v + (1.0 - keep) * v.max(grey))
    });
    let last = w * h - 1;
    whitened.blend(|i, _| (1.0, flakes.values[i] + flakes.values[last - i]))
}

/// `a x + b frost`, with a procedural frost texture (the reference blends in a random crop
/// of one of five frost photos).
pub(crate) fn frost(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    let (a, b) = [(1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][s];
    let texture = frost_texture(image.width(), image.height(), rng);
    image.blend(|i, c| (a, b * texture[c].values[i]))
}

/// The mean and standard deviation (grey levels, RGB) of the frost the reference blends in
/// from each of its five photos, `frost1.png` to `frost5.jpg`: random 224×224 crops of the
/// photo scaled by 1.1, 40 per photo (`frost2` and `frost3` are the same picture).
const FROST_TONES: [([f32; 3], [f32; 3]); 5] = [
    ([79.6, 149.5, 165.6], [28.3, 16.4, 14.8]),
    ([197.1, 201.4, 210.7], [19.9, 20.6, 21.5]),
    ([198.1, 202.4, 211.8], [19.8, 20.5, 21.3]),
    ([144.5, 159.3, 172.2], [26.7, 26.7, 28.1]),
    ([98.4, 109.8, 121.8], [37.3, 36.8, 35.9]),
];

/// A frost texture of `width × height` in `[0, 1]`: ice needles (short random strokes,
/// blurred) over a cloudy plasma fractal, standardised and given the mean colour and spread
/// of one of the reference's photos, picked at random as the reference picks a photo.
fn frost_texture(width: usize, height: usize, rng: &mut Rng) -> [Plane; 3] {
    // First, as the reference's first draw picks its photo.
    let (tone, spread) = FROST_TONES[rng.randint(0, FROST_TONES.len() as i64) as usize];
    let size = (width.max(height)).next_power_of_two();
    let cloud = plasma_fractal(size, 2.0, rng);
    let mut needles = Plane::filled(width, height, 0.0);
    for _ in 0..(width * height) / 40 {
        let (mut x, mut y) = (
            rng.uniform(0.0, width as f64),
            rng.uniform(0.0, height as f64),
        );
        let angle = rng.uniform(0.0, std::f64::consts::TAU);
        let (dy, dx) = angle.sin_cos();
        let brightness = rng.uniform(0.4, 1.0) as f32;
        for _ in 0..rng.randint(3, 14) {
            let (xi, yi) = (x as usize, y as usize);
            if xi < width && yi < height {
                let v = &mut needles.values[yi * width + xi];
                *v = v.max(brightness);
            }
            x += dx;
            y += dy;
        }
    }
    let needles = filter::gaussian(&needles, 0.6, 0.6, 4.0, Border::Nearest);
    let t = Plane::from_fn(width, height, |x, y| {
        0.5 * cloud[y * size + x] as f32 + 0.8 * needles.at(x, y)
    });
    let n = t.values.len() as f64;
    let mean = t.values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = t
        .values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let sd = var.sqrt().max(1e-6);
    [0, 1, 2].map(|c| {
        t.map(|v| {
            let z = ((f64::from(v) - mean) / sd) as f32;
            ((tone[c] + spread[c] * z) / 255.0).clamp(0.0, 1.0)
        })
    })
}

/// A plasma-fractal haze `c x̂ + x`, rescaled so that the image's maximum stays below 1.
pub(crate) fn fog(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    let (c, decay) = [(1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][s];
    let (w, h) = (image.width(), image.height());
    // The reference takes the largest side of the array's shape, channels (3) included.
    let size = w.max(h).max(3).next_power_of_two();
    let haze = plasma_fractal(size, decay, rng);
    let max = image
        .planes
        .iter()
        .flat_map(|p| p.values.iter())
        .fold(0.0f32, |m, &v| m.max(v)) as f64;
    image.map_planes(|p| {
        Plane::from_fn(w, h, |x, y| {
            let v = f64::from(p.at(x, y)) + c * haze[y * size + x];
            (v * max / (max + c)).clamp(0.0, 1.0) as f32
        })
    })
}

/// The reference's `plasma_fractal` (diamond-square, after FLHerne's mapgen): a
/// `size × size` height map (`size` a power of two) with values in `[0, 1]`, row-major; the
/// random amplitude starts at 100 and is divided by `decay` at every level.
pub(crate) fn plasma_fractal(size: usize, decay: f64, rng: &mut Rng) -> Vec<f64> {
    let mut map = vec![0.0f64; size * size];
    let mut step = size;
    let mut wibble = 100.0f64;
    let mut wibbled = |sum: f64, wibble: f64| sum / 4.0 + wibble * rng.uniform(-wibble, wibble);
    while step >= 2 {
        let half = step / 2;
        let n = size / step;
        let at = |map: &[f64], i: usize, j: usize| map[i * size + j];
        // Squares: the centre of each square of corners `step` apart.
        for i in 0..n {
            for j in 0..n {
                let (i1, j1) = (((i + 1) % n) * step, ((j + 1) % n) * step);
                // Summed in the reference's order: down, then across.
                let sum = (at(&map, i * step, j * step) + at(&map, i1, j * step))
                    + (at(&map, i * step, j1) + at(&map, i1, j1));
                map[(i * step + half) * size + j * step + half] = wibbled(sum, wibble);
            }
        }
        // Diamonds: first the midpoints of the top edges, then of the left edges.
        let centre =
            |map: &[f64], i: usize, j: usize| map[(i * step + half) * size + j * step + half];
        let corner = |map: &[f64], i: usize, j: usize| map[i * step * size + j * step];
        for i in 0..n {
            for j in 0..n {
                let sum = (centre(&map, i, j) + centre(&map, (i + n - 1) % n, j))
                    + (corner(&map, i, j) + corner(&map, i, (j + 1) % n));
                map[i * step * size + j * step + half] = wibbled(sum, wibble);
            }
        }
        for i in 0..n {
            for j in 0..n {
                let sum = (centre(&map, i, j) + centre(&map, i, (j + n - 1) % n))
                    + (corner(&map, i, j) + corner(&map, (i + 1) % n, j));
                map[(i * step + half) * size + j * step] = wibbled(sum, wibble);
            }
        }
        step /= 2;
        wibble /= decay;
    }
    let min = map.iter().copied().fold(f64::INFINITY, f64::min);
    map.iter_mut().for_each(|v| *v -= min);
    let max = map.iter().copied().fold(0.0, f64::max);
    if max > 0.0 {
        map.iter_mut().for_each(|v| *v /= max);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of the reference's `plasma_fractal(mapsize=8, wibbledecay=2)` after
    /// `np.random.seed(3)` (imagecorruptions 1.1.2, NumPy 2.4.6).
    #[test]
    fn plasma_fractal_is_the_references_for_the_same_seed() {
        let a = plasma_fractal(8, 2.0, &mut Rng::new(3));
        let reference = [
            (0, 0.4402620845587811),
            (1, 0.4868149225654776),
            (9, 0.4731622009132629),
            (27, 0.5365735978104461),
            (63, 0.3942435090577642),
        ];
        for (i, v) in reference {
            assert!((a[i] - v).abs() < 1e-12, "{i}: {} against {v}", a[i]);
        }
    }

    #[test]
    fn plasma_fractal_spans_zero_to_one_and_follows_the_seed() {
        let a = plasma_fractal(32, 2.0, &mut Rng::new(3));
        assert_eq!(a.len(), 32 * 32);
        let min = a.iter().copied().fold(f64::INFINITY, f64::min);
        let max = a.iter().copied().fold(0.0, f64::max);
        assert_eq!((min, max), (0.0, 1.0));
        assert_eq!(a, plasma_fractal(32, 2.0, &mut Rng::new(3)));
        assert_ne!(a, plasma_fractal(32, 2.0, &mut Rng::new(4)));
    }
}

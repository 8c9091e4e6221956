//! Spatter: water drops (severities 1–3) or mud (4–5) from thresholded, blurred Gaussian
//! noise. The water drops' shading follows the reference's OpenCV chain (Canny edges,
//! distance to them, histogram equalisation, an emboss filter), each step written here.

use super::filter::{self, Border};
use super::{Plane, RgbPlanes, Rng};

/// Water drops or mud.
pub(crate) fn spatter(image: &RgbPlanes, s: usize, rng: &mut Rng) -> RgbPlanes {
    let (loc, scale, sigma, threshold, intensity, mud) = [
        (0.65, 0.3, 4.0, 0.69, 0.6, false),
        (0.65, 0.3, 3.0, 0.68, 0.6, false),
        (0.65, 0.3, 2.0, 0.68, 0.5, false),
        (0.65, 0.3, 1.0, 0.65, 1.5, true),
        (0.67, 0.4, 1.0, 0.65, 1.5, true),
    ][s];
    let (w, h) = (image.width(), image.height());
    let noise = Plane::from_fn(w, h, |_, _| rng.normal(loc, scale) as f32);
    let liquid = filter::gaussian(&noise, sigma, sigma, 4.0, Border::Nearest).map(|v| {
        if f64::from(v) < threshold {
            0.0
        } else {
            v
        }
    });
    if mud {
        let mask = liquid.map(|v| if f64::from(v) > threshold { 1.0 } else { 0.0 });
        let m = filter::gaussian(&mask, intensity, intensity, 4.0, Border::Nearest).map(|v| {
            if v < 0.8 {
                0.0
            } else {
                v
            }
        });
        let colour = [63.0 / 255.0, 42.0 / 255.0, 20.0 / 255.0];
        image.blend(|i, c| (1.0 - m.values[i], colour[c] * m.values[i]))
    } else {
        let drops = liquid.map(|v| (v * 255.0).clamp(0.0, 255.0).trunc());
        let shade = shading(&drops);
        let m: Vec<f32> = drops
            .values
            .iter()
            .zip(&shade)
            .map(|(&a, &b)| a * b)
            .collect();
        let max = m.iter().copied().fold(0.0, f32::max);
        let colour = [175.0 / 255.0, 238.0 / 255.0, 238.0 / 255.0];
        let k = intensity as f32 / if max > 0.0 { max } else { 1.0 };
        image.blend(|i, c| (1.0, colour[c] * m[i] * k))
    }
}

/// The reference's shading of the drops (8-bit values): distance to Canny edges capped at
/// 20, 3×3 mean, equalised, embossed, 3×3 mean again.
fn shading(drops: &Plane) -> Vec<f32> {
    let edges = canny(drops, 50.0, 150.0);
    let dist = distance_to(&edges, drops.width, drops.height);
    let capped = Plane {
        values: dist.iter().map(|&d| d.min(20.0)).collect(),
        ..*drops
    };
    let box3 = [1.0 / 9.0; 9];
    let mean = filter::correlate2d(&capped, &box3, 3).map(f32::trunc);
    let equalised = equalise(&mean);
    let emboss = [-2.0, -1.0, 0.0, -1.0, 1.0, 1.0, 0.0, 1.0, 2.0];
    let embossed = filter::correlate2d(&equalised, &emboss, 3).map(|v| v.round().clamp(0.0, 255.0));
    filter::correlate2d(&embossed, &box3, 3)
        .map(f32::round)
        .values
}

/// OpenCV's `equalizeHist` of 8-bit values.
fn equalise(p: &Plane) -> Plane {
    let mut hist = [0usize; 256];
    for &v in &p.values {
        hist[v as usize] += 1;
    }
    let total = p.values.len();
    let first = hist.iter().position(|&n| n > 0).unwrap_or(0);
    if hist[first] == total {
        return p.clone();
    }
    let scale = 255.0 / (total - hist[first]) as f64;
    let mut lut = [0.0f32; 256];
    let mut sum = 0;
    for i in first + 1..256 {
        sum += hist[i];
        lut[i] = (sum as f64 * scale).round() as f32;
    }
    p.map(|v| lut[v as usize])
}

/// OpenCV's `Canny` (3×3 Sobel, L1 magnitude): edge pixels of the 8-bit plane, row-major.
fn canny(p: &Plane, low: f32, high: f32) -> Vec<bool> {
    let (w, h) = (p.width, p.height);
    let at = |x: isize, y: isize| p.at(Border::Nearest.index(x, w), Border::Nearest.index(y, h));
    let mut gx = vec![0.0f32; w * h];
    let mut gy = vec![0.0f32; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            gx[i] = at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2.0 * at(x - 1, y)
                - at(x - 1, y + 1);
            gy[i] = at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2.0 * at(x, y - 1)
                - at(x + 1, y - 1);
        }
    }
    let mag: Vec<f32> = gx.iter().zip(&gy).map(|(a, b)| a.abs() + b.abs()).collect();
    let m = |x: isize, y: isize| {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0.0
        } else {
            mag[y as usize * w + x as usize]
        }
    };
    // Non-maximum suppression along the gradient, then hysteresis from the strong pixels.
    let (tan22, tan67) = (0.414_213_56f32, 2.414_213_6f32);
    let mut state = vec![0u8; w * h]; // 0 none, 1 weak, 2 strong
    let mut stack = Vec::new();
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            let v = mag[i];
            if v <= low {
                continue;
            }
            let (ax, ay) = (gx[i].abs(), gy[i].abs());
            let is_max = if ay < ax * tan22 {
                v > m(x - 1, y) && v >= m(x + 1, y)
            } else if ay > ax * tan67 {
                v > m(x, y - 1) && v >= m(x, y + 1)
            } else {
                let s = if (gx[i] < 0.0) != (gy[i] < 0.0) {
                    -1
                } else {
                    1
                };
                v > m(x - s, y - 1) && v > m(x + s, y + 1)
            };
            if is_max {
                state[i] = if v > high { 2 } else { 1 };
                if v > high {
                    stack.push(i);
                }
            }
        }
    }
    while let Some(i) = stack.pop() {
        let (x, y) = ((i % w) as isize, (i / w) as isize);
        for (dx, dy) in [
            (-1, -1),
            (0, -1),
            (1, -1),
            (-1, 0),
            (1, 0),
            (-1, 1),
            (0, 1),
            (1, 1),
        ] {
            let (nx, ny) = (x + dx, y + dy);
            if nx >= 0 && ny >= 0 && nx < w as isize && ny < h as isize {
                let j = ny as usize * w + nx as usize;
                if state[j] == 1 {
                    state[j] = 2;
                    stack.push(j);
                }
            }
        }
    }
    state.iter().map(|&s| s == 2).collect()
}

/// Euclidean distance of every pixel to the nearest `true` one (Felzenszwalb and
/// Huttenlocher's two-pass transform; OpenCV's 5×5 mask approximates it). With no `true`
/// pixel every distance is infinite.
fn distance_to(targets: &[bool], w: usize, h: usize) -> Vec<f32> {
    let inf = 1e20f64;
    let mut d: Vec<f64> = targets.iter().map(|&t| if t { 0.0 } else { inf }).collect();
    let mut line = Vec::new();
    for x in 0..w {
        line.clear();
        line.extend((0..h).map(|y| d[y * w + x]));
        for (y, v) in squared_distance_1d(&line).into_iter().enumerate() {
            d[y * w + x] = v;
        }
    }
    for y in 0..h {
        let row = squared_distance_1d(&d[y * w..(y + 1) * w]);
        d[y * w..(y + 1) * w].copy_from_slice(&row);
    }
    d.iter()
        .map(|&v| {
            if v >= inf {
                f32::INFINITY
            } else {
                v.sqrt() as f32
            }
        })
        .collect()
}

/// The lower envelope of parabolas: `min_j (i - j)² + f[j]` for every `i`.
fn squared_distance_1d(f: &[f64]) -> Vec<f64> {
    let n = f.len();
    let mut v = vec![0usize; n];
    let mut z = vec![0.0f64; n + 1];
    let mut k = 0;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let sq = |q: usize| (q * q) as f64;
    for q in 1..n {
        loop {
            let p = v[k];
            let s = ((f[q] + sq(q)) - (f[p] + sq(p))) / (2.0 * (q as f64 - p as f64));
            if s <= z[k] && k > 0 {
                k -= 1;
            } else {
                k += 1;
                v[k] = q;
                z[k] = s;
                z[k + 1] = f64::INFINITY;
                break;
            }
        }
    }
    let mut out = vec![0.0; n];
    k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        *o = sq(q.abs_diff(p)) + f[p];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_transform_is_euclidean() {
        let mut t = vec![false; 25];
        t[12] = true;
        let d = distance_to(&t, 5, 5);
        assert_eq!(d[12], 0.0);
        assert!((d[0] - 8f32.sqrt()).abs() < 1e-6);
        assert!((d[2] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn canny_finds_the_edge_of_a_step() {
        let p = Plane::from_fn(12, 8, |x, _| if x < 6 { 0.0 } else { 200.0 });
        let e = canny(&p, 50.0, 150.0);
        let cols: Vec<usize> = (0..12).filter(|&x| e[3 * 12 + x]).collect();
        assert!(
            !cols.is_empty() && cols.iter().all(|&x| x == 5 || x == 6),
            "{cols:?}"
        );
    }
}

//! JPEG compression as Pillow does it with libjpeg-turbo's defaults: YCbCr with 4:2:0
//! chroma subsampling, the integer ("islow") DCT, the standard quantisation tables scaled
//! by the quality, then decoding with fancy (triangle) chroma upsampling. Only the lossy
//! steps are run; the entropy coding in between is lossless and left out. Written by hand
//! because `image`'s encoder does no chroma subsampling, which alone puts it below 35 dB
//! from the reference at the lowest qualities.

use super::plane::to_u8;
use super::RgbPlanes;

/// JPEG at quality 25, 18, 15, 10 or 7.
pub(crate) fn compress(image: &RgbPlanes, s: usize) -> RgbPlanes {
    let quality = [25, 18, 15, 10, 7][s];
    let (w, h) = (image.width(), image.height());
    let rgb: Vec<[u8; 3]> = (0..w * h)
        .map(|i| image.planes.each_ref().map(|p| to_u8(p.values[i])))
        .collect();
    let ycc: Vec<[i32; 3]> = rgb.iter().map(|&p| rgb_to_ycc(p)).collect();
    let channel = |c: usize| Samples::from_fn(w, h, |(x, y)| ycc[y * w + x][c]);
    let luma = round_trip(&channel(0), scaled_table(&LUMA_TABLE, quality));
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let chroma = |c: usize| {
        let full = channel(c);
        let small = downsample(&full);
        upsample(
            &round_trip(&small, scaled_table(&CHROMA_TABLE, quality)),
            cw,
            ch,
        )
    };
    let (cb, cr) = (chroma(1), chroma(2));
    let mut out = image.clone();
    for y in 0..h {
        for x in 0..w {
            let rgb = ycc_to_rgb(luma.at(x, y), cb.at(x, y), cr.at(x, y));
            for (plane, v) in out.planes.iter_mut().zip(rgb) {
                plane.values[y * w + x] = f32::from(v) / 255.0;
            }
        }
    }
    out
}

/// Integer samples of one component.
struct Samples {
    width: usize,
    height: usize,
    values: Vec<i32>,
}

impl Samples {
    fn from_fn(width: usize, height: usize, f: impl FnMut((usize, usize)) -> i32) -> Self {
        let values = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(f)
            .collect();
        Samples {
            width,
            height,
            values,
        }
    }

    /// The sample at `(x, y)`, the edge repeated beyond it (libjpeg's edge expansion).
    fn at(&self, x: usize, y: usize) -> i32 {
        self.values[y.min(self.height - 1) * self.width + x.min(self.width - 1)]
    }
}

const SCALEBITS: u32 = 16;

fn fix(x: f64) -> i32 {
    (x * f64::from(1 << SCALEBITS) + 0.5) as i32
}

/// libjpeg's `rgb_ycc_convert`.
fn rgb_to_ycc([r, g, b]: [u8; 3]) -> [i32; 3] {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let half = 1 << (SCALEBITS - 1);
    let offset = 128 << SCALEBITS;
    let y = (fix(0.299) * r + fix(0.587) * g + fix(0.114) * b + half) >> SCALEBITS;
    let cb = (-fix(0.16874) * r - fix(0.33126) * g + fix(0.5) * b + offset + half - 1) >> SCALEBITS;
    let cr = (fix(0.5) * r - fix(0.41869) * g - fix(0.08131) * b + offset + half - 1) >> SCALEBITS;
    [y, cb, cr]
}

/// libjpeg's `ycc_rgb_convert`.
fn ycc_to_rgb(y: i32, cb: i32, cr: i32) -> [u8; 3] {
    let half = 1 << (SCALEBITS - 1);
    let (cb, cr) = (cb - 128, cr - 128);
    let r = y + ((fix(1.402) * cr + half) >> SCALEBITS);
    let g = y + ((-fix(0.34414) * cb + half - fix(0.71414) * cr) >> SCALEBITS);
    let b = y + ((fix(1.772) * cb + half) >> SCALEBITS);
    [r, g, b].map(|v| v.clamp(0, 255) as u8)
}

/// libjpeg's `h2v2_downsample`: means of 2×2 blocks with the bias alternating 1, 2 along a
/// row, over the component expanded to whole 16×16 blocks by repeating its edges.
fn downsample(full: &Samples) -> Samples {
    let (w, h) = (full.width.div_ceil(16) * 8, full.height.div_ceil(16) * 8);
    Samples::from_fn(w, h, |(x, y)| {
        let sum = full.at(2 * x, 2 * y)
            + full.at(2 * x + 1, 2 * y)
            + full.at(2 * x, 2 * y + 1)
            + full.at(2 * x + 1, 2 * y + 1);
        (sum + 1 + (x as i32 & 1)) >> 2
    })
}

/// libjpeg's `h2v2_fancy_upsample` of the first `width × height` samples (the component's
/// real size; the rows and columns beyond it repeat its edges).
fn upsample(small: &Samples, width: usize, height: usize) -> Samples {
    let at = |x: isize, y: isize| {
        small.at(
            x.clamp(0, width as isize - 1) as usize,
            y.clamp(0, height as isize - 1) as usize,
        )
    };
    Samples::from_fn(2 * width, 2 * height, |(x, y)| {
        let (i, j) = ((y / 2) as isize, (x / 2) as isize);
        let far = if y % 2 == 0 { i - 1 } else { i + 1 };
        let colsum = |j: isize| 3 * at(j, i) + at(j, far);
        if x % 2 == 0 {
            (3 * colsum(j) + colsum(j - 1) + 8) >> 4
        } else {
            (3 * colsum(j) + colsum(j + 1) + 7) >> 4
        }
    })
}

/// The component through DCT, quantisation with `table`, dequantisation and inverse DCT,
/// block by block; the result covers whole blocks.
fn round_trip(component: &Samples, table: [i32; 64]) -> Samples {
    let (bw, bh) = (component.width.div_ceil(8), component.height.div_ceil(8));
    let mut out = Samples {
        width: bw * 8,
        height: bh * 8,
        values: vec![0; bw * bh * 64],
    };
    for by in 0..bh {
        for bx in 0..bw {
            let mut block = [0i32; 64];
            for (k, v) in block.iter_mut().enumerate() {
                *v = component.at(bx * 8 + k % 8, by * 8 + k / 8) - 128;
            }
            forward_dct(&mut block);
            for (v, &q) in block.iter_mut().zip(&table) {
                *v = quantize(*v, (q as u32) << 3) * q;
            }
            let pixels = inverse_dct(&block);
            for (k, &v) in pixels.iter().enumerate() {
                out.values[(by * 8 + k / 8) * out.width + bx * 8 + k % 8] = v;
            }
        }
    }
    out
}

/// libjpeg-turbo's quantisation: division by `divisor`, rounded, through its reciprocal
/// (`compute_reciprocal` with 16-bit DCT elements).
fn quantize(x: i32, divisor: u32) -> i32 {
    let b = 31 - divisor.leading_zeros();
    let mut r = 16 + b;
    let mut recip = (1u64 << r) / u64::from(divisor);
    let rem = (1u64 << r) % u64::from(divisor);
    let mut corr = u64::from(divisor / 2);
    if rem == 0 {
        recip >>= 1;
        r -= 1;
    } else if rem <= u64::from(divisor / 2) {
        corr += 1;
    } else {
        recip += 1;
    }
    let q = ((u64::from(x.unsigned_abs()) + corr) * recip) >> r;
    if x < 0 {
        -(q as i32)
    } else {
        q as i32
    }
}

/// The standard tables (JPEG Annex K) in natural order.
const LUMA_TABLE: [u8; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

const CHROMA_TABLE: [u8; 64] = {
    let mut t = [99u8; 64];
    let top = [
        [17, 18, 24, 47],
        [18, 21, 26, 66],
        [24, 26, 56, 99],
        [47, 66, 99, 99],
    ];
    let mut i = 0;
    while i < 16 {
        t[(i / 4) * 8 + i % 4] = top[i / 4][i % 4];
        i += 1;
    }
    t
};

/// libjpeg's `jpeg_quality_scaling` and `jpeg_add_quant_table` with baseline limits.
fn scaled_table(base: &[u8; 64], quality: u32) -> [i32; 64] {
    let scale = if quality < 50 {
        5000 / quality
    } else {
        200 - 2 * quality
    };
    base.map(|v| ((u32::from(v) * scale + 50) / 100).clamp(1, 255) as i32)
}

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const F0_298: i32 = 2446;
const F0_390: i32 = 3196;
const F0_541: i32 = 4433;
const F0_765: i32 = 6270;
const F0_899: i32 = 7373;
const F1_175: i32 = 9633;
const F1_501: i32 = 12299;
const F1_847: i32 = 15137;
const F1_961: i32 = 16069;
const F2_053: i32 = 16819;
const F2_562: i32 = 20995;
const F3_072: i32 = 25172;

fn descale(x: i32, n: u32) -> i32 {
    (x + (1 << (n - 1))) >> n
}

/// libjpeg's `jpeg_fdct_islow` in place: rows, then columns; the result is 8 times the
/// orthonormal DCT.
fn forward_dct(block: &mut [i32; 64]) {
    for pass in 0..2 {
        let (stride, step) = if pass == 0 { (8, 1) } else { (1, 8) };
        for line in 0..8 {
            let d = |k: usize| line * stride + k * step;
            let v: [i32; 8] = std::array::from_fn(|k| block[d(k)]);
            let (tmp0, tmp7) = (v[0] + v[7], v[0] - v[7]);
            let (tmp1, tmp6) = (v[1] + v[6], v[1] - v[6]);
            let (tmp2, tmp5) = (v[2] + v[5], v[2] - v[5]);
            let (tmp3, tmp4) = (v[3] + v[4], v[3] - v[4]);
            let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
            let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
            let (even_shift, odd_shift) = if pass == 0 {
                (None, CONST_BITS - PASS1_BITS)
            } else {
                (Some(PASS1_BITS), CONST_BITS + PASS1_BITS)
            };
            let dc = |x: i32| match even_shift {
                None => x << PASS1_BITS,
                Some(n) => descale(x, n),
            };
            block[d(0)] = dc(tmp10 + tmp11);
            block[d(4)] = dc(tmp10 - tmp11);
            let z1 = (tmp12 + tmp13) * F0_541;
            block[d(2)] = descale(z1 + tmp13 * F0_765, odd_shift);
            block[d(6)] = descale(z1 - tmp12 * F1_847, odd_shift);
            let (z1, z2, z3, z4) = (tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7);
            let z5 = (z3 + z4) * F1_175;
            let (tmp4, tmp5, tmp6, tmp7) =
                (tmp4 * F0_298, tmp5 * F2_053, tmp6 * F3_072, tmp7 * F1_501);
            let (z1, z2) = (-z1 * F0_899, -z2 * F2_562);
            let (z3, z4) = (-z3 * F1_961 + z5, -z4 * F0_390 + z5);
            block[d(7)] = descale(tmp4 + z1 + z3, odd_shift);
            block[d(5)] = descale(tmp5 + z2 + z4, odd_shift);
            block[d(3)] = descale(tmp6 + z2 + z3, odd_shift);
            block[d(1)] = descale(tmp7 + z1 + z4, odd_shift);
        }
    }
}

/// libjpeg's `jpeg_idct_islow` of dequantised coefficients: columns, then rows, to samples
/// in 0–255.
fn inverse_dct(coef: &[i32; 64]) -> [i32; 64] {
    let mut ws = [0i32; 64];
    let mut out = [0i32; 64];
    for pass in 0..2 {
        let (src, stride, step, shift) = if pass == 0 {
            (coef, 1, 8, CONST_BITS - PASS1_BITS)
        } else {
            (&ws, 8, 1, CONST_BITS + PASS1_BITS + 3)
        };
        let mut result = [0i32; 64];
        for line in 0..8 {
            let d = |k: usize| line * stride + k * step;
            let v: [i32; 8] = std::array::from_fn(|k| src[d(k)]);
            let z1 = (v[2] + v[6]) * F0_541;
            let tmp2 = z1 - v[6] * F1_847;
            let tmp3 = z1 + v[2] * F0_765;
            let tmp0 = (v[0] + v[4]) << CONST_BITS;
            let tmp1 = (v[0] - v[4]) << CONST_BITS;
            let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
            let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
            let (t0, t1, t2, t3) = (v[7], v[5], v[3], v[1]);
            let (z1, z2, z3, z4) = (t0 + t3, t1 + t2, t0 + t2, t1 + t3);
            let z5 = (z3 + z4) * F1_175;
            let (z1, z2) = (-z1 * F0_899, -z2 * F2_562);
            let (z3, z4) = (-z3 * F1_961 + z5, -z4 * F0_390 + z5);
            let t0 = t0 * F0_298 + z1 + z3;
            let t1 = t1 * F2_053 + z2 + z4;
            let t2 = t2 * F3_072 + z2 + z3;
            let t3 = t3 * F1_501 + z1 + z4;
            let outs = [
                tmp10 + t3,
                tmp11 + t2,
                tmp12 + t1,
                tmp13 + t0,
                tmp13 - t0,
                tmp12 - t1,
                tmp11 - t2,
                tmp10 - t3,
            ];
            for (k, &o) in outs.iter().enumerate() {
                result[d(k)] = descale(o, shift);
            }
        }
        if pass == 0 {
            ws = result;
        } else {
            out = result.map(|v| (v + 128).clamp(0, 255));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dct_round_trip_without_quantisation_is_nearly_exact() {
        let mut block: [i32; 64] = std::array::from_fn(|k| ((k * 37) % 200) as i32 - 100);
        let original = block;
        forward_dct(&mut block);
        // The forward DCT is 8 times orthonormal; the inverse expects the plain coefficients.
        let coef = block.map(|v| quantize(v, 8));
        let back = inverse_dct(&coef);
        for (a, b) in original.iter().zip(back) {
            assert!((a + 128 - b).abs() <= 1, "{a} {b}");
        }
    }

    #[test]
    fn quantisation_rounds_like_division() {
        for d in [8u32, 16, 24, 136, 792, 2040] {
            for x in -3000i32..3000 {
                let exact = (f64::from(x) / f64::from(d)).abs().round() as i32 * x.signum();
                assert!((quantize(x, d) - exact).abs() <= 1, "{x}/{d}");
            }
        }
    }

    #[test]
    fn colour_conversion_round_trips() {
        for rgb in [[0, 0, 0], [255, 255, 255], [200, 30, 90], [12, 250, 128]] {
            let [y, cb, cr] = rgb_to_ycc(rgb);
            let back = ycc_to_rgb(y, cb, cr);
            for (a, b) in rgb.iter().zip(back) {
                assert!(
                    (i32::from(*a) - i32::from(b)).abs() <= 1,
                    "{rgb:?} {back:?}"
                );
            }
        }
    }
}

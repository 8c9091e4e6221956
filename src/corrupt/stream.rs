//! The random stream of the corruptions: NumPy's legacy `RandomState` (MT19937 seeded with
//! `np.random.seed(s)`, which the reference implementation `imagecorruptions` draws from),
//! so that a corruption seeded with `s` draws the numbers the reference draws after
//! `np.random.seed(s)`. The generator is `rand_mt`'s; the draws follow NumPy's C code
//! (`numpy/random/src`): doubles from two 32-bit words, Gaussians by the polar method with
//! one cached, bounded integers by masked rejection, Poisson by multiplication below λ = 10
//! and by PTRS (Hörmann 1993) above.

use rand::RngCore;
use rand_mt::Mt;
use rand_pcg::Pcg64;

/// NumPy's `RandomState` stream.
pub struct NumpyStream {
    mt: Mt,
    /// The second Gaussian of the last polar pair, not yet returned.
    gauss: Option<f64>,
}

impl NumpyStream {
    /// The stream of `np.random.seed(seed)`.
    pub fn new(seed: u32) -> Self {
        NumpyStream {
            mt: Mt::new(seed),
            gauss: None,
        }
    }

    /// The stream of a 64-bit seed: NumPy takes 32 bits, here the low half xor the high one.
    pub fn from_u64(seed: u64) -> Self {
        Self::new(fold(seed))
    }

    /// `np.random.random_sample()`: uniform in `[0, 1)`, 53 random bits.
    pub fn random(&mut self) -> f64 {
        let a = self.mt.next_u32() >> 5;
        let b = self.mt.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) / 9_007_199_254_740_992.0
    }

    /// `np.random.uniform(low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.random()
    }

    /// `np.random.normal(loc, scale)`.
    pub fn normal(&mut self, loc: f64, scale: f64) -> f64 {
        loc + scale * self.gauss()
    }

    /// `np.random.standard_normal()`: the polar method, the pair's first value kept for the
    /// next call.
    pub fn gauss(&mut self) -> f64 {
        if let Some(g) = self.gauss.take() {
            return g;
        }
        loop {
            let x1 = 2.0 * self.random() - 1.0;
            let x2 = 2.0 * self.random() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.gauss = Some(f * x1);
                return f * x2;
            }
        }
    }

    /// `np.random.randint(low, high)`: uniform in `[low, high)` (`low < high`, a span under
    /// 2³²), by masked rejection as `RandomState` draws.
    pub fn randint(&mut self, low: i64, high: i64) -> i64 {
        debug_assert!(low < high && high - low <= 1 << 32);
        let range = (high - low - 1) as u32;
        if range == 0 {
            return low;
        }
        let mask = u32::MAX >> range.leading_zeros();
        loop {
            let v = self.mt.next_u32() & mask;
            if v <= range {
                return low + i64::from(v);
            }
        }
    }

    /// `np.random.poisson(lam)` (`lam ≥ 0`).
    pub fn poisson(&mut self, lam: f64) -> i64 {
        if lam >= 10.0 {
            self.poisson_ptrs(lam)
        } else if lam == 0.0 {
            0
        } else {
            let limit = (-lam).exp();
            let (mut k, mut prod) = (0, 1.0);
            loop {
                prod *= self.random();
                if prod > limit {
                    k += 1;
                } else {
                    return k;
                }
            }
        }
    }

    /// Hörmann's transformed rejection with squeeze, NumPy's constants.
    fn poisson_ptrs(&mut self, lam: f64) -> i64 {
        let slam = lam.sqrt();
        let loglam = lam.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let invalpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.random() - 0.5;
            let v = self.random();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lam + 0.43).floor() as i64;
            if us >= 0.07 && v <= vr {
                return k;
            }
            if k < 0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + invalpha.ln() - (a / (us * us) + b).ln()
                <= -lam + k as f64 * loglam - loggam(k as f64 + 1.0)
            {
                return k;
            }
        }
    }
}

/// NumPy's `np.random.default_rng(seed)` stream, which scikit-image's `random_noise` (the
/// reference's impulse noise) draws from: PCG64 (`rand_pcg`'s, the same generator) seeded
/// through NumPy's `SeedSequence`, doubles from the top 53 bits of a 64-bit word.
pub struct NumpyGenerator {
    pcg: Pcg64,
}

impl NumpyGenerator {
    /// The stream of `np.random.default_rng(seed)`.
    pub fn new(seed: u64) -> Self {
        let s = seed_sequence(seed);
        let state = (u128::from(s[0]) << 64) | u128::from(s[1]);
        let stream = (u128::from(s[2]) << 64) | u128::from(s[3]);
        NumpyGenerator {
            pcg: Pcg64::new(state, stream),
        }
    }

    /// `Generator.random()`: uniform in `[0, 1)`.
    pub fn random(&mut self) -> f64 {
        (self.pcg.next_u64() >> 11) as f64 / 9_007_199_254_740_992.0
    }
}

/// `np.random.SeedSequence(seed).generate_state(4, np.uint64)`: the seed's 32-bit words hashed
/// into a pool of four, mixed, then drawn out (Melissa O'Neill's `seed_seq`, NumPy's constants).
fn seed_sequence(seed: u64) -> [u64; 4] {
    const INIT_A: u32 = 0x43b0_d7e5;
    const MULT_A: u32 = 0x931e_8875;
    const INIT_B: u32 = 0x8b51_f9dd;
    const MULT_B: u32 = 0x58f3_8ded;
    let mut words = vec![seed as u32];
    if seed >> 32 != 0 {
        words.push((seed >> 32) as u32);
    }
    let mut hash = INIT_A;
    let mut hashmix = |value: u32| {
        let mut v = value ^ hash;
        hash = hash.wrapping_mul(MULT_A);
        v = v.wrapping_mul(hash);
        v ^ (v >> 16)
    };
    let mix = |x: u32, y: u32| {
        let r = 0xca01_f9dd_u32
            .wrapping_mul(x)
            .wrapping_sub(0x4973_f715_u32.wrapping_mul(y));
        r ^ (r >> 16)
    };
    let mut pool = [0u32; 4];
    for (i, p) in pool.iter_mut().enumerate() {
        *p = hashmix(words.get(i).copied().unwrap_or(0));
    }
    for src in 0..4 {
        for dst in 0..4 {
            if src != dst {
                let h = hashmix(pool[src]);
                pool[dst] = mix(pool[dst], h);
            }
        }
    }
    let mut hash = INIT_B;
    let mut out = [0u64; 4];
    for (i, o) in out.iter_mut().enumerate() {
        let mut half = |j: usize| {
            let mut v = pool[j % 4] ^ hash;
            hash = hash.wrapping_mul(MULT_B);
            v = v.wrapping_mul(hash);
            u64::from(v ^ (v >> 16))
        };
        let low = half(2 * i);
        *o = low | (half(2 * i + 1) << 32);
    }
    out
}

/// A 64-bit seed folded to the 32 bits NumPy takes.
pub fn fold(seed: u64) -> u32 {
    (seed ^ (seed >> 32)) as u32
}

/// `ln Γ(x)` as NumPy's `random_loggam` computes it (Stirling's series, shifted up to 7).
fn loggam(x: f64) -> f64 {
    const A: [f64; 10] = [
        8.333333333333333e-02,
        -2.777777777777778e-03,
        7.936507936507937e-04,
        -5.952380952380952e-04,
        8.417508417508418e-04,
        -1.917526917526918e-03,
        6.410_256_410_256_41e-3,
        -2.955065359477124e-02,
        1.796443723688307e-01,
        -1.39243221690590e+00,
    ];
    if x == 1.0 || x == 2.0 {
        return 0.0;
    }
    let n = if x < 7.0 { (7.0 - x) as i64 } else { 0 };
    let mut x0 = x + n as f64;
    let x2 = (1.0 / x0) * (1.0 / x0);
    let mut gl0 = A[9];
    for a in A[..9].iter().rev() {
        gl0 *= x2;
        gl0 += a;
    }
    let mut gl = gl0 / x0 + 0.5 * 1.837_877_066_409_345_3 + (x0 - 0.5) * x0.ln() - x0;
    for _ in 0..n {
        gl -= (x0 - 1.0).ln();
        x0 -= 1.0;
    }
    gl
}

#[cfg(test)]
mod tests {
    use super::*;

    // The expected values were printed by NumPy 2.4.6 (`np.random.seed(s)`, then the call).

    #[test]
    fn doubles_and_uniforms_are_numpys() {
        let mut r = NumpyStream::new(0);
        assert_eq!(
            [r.random(), r.random(), r.random()],
            [0.5488135039273248, 0.7151893663724195, 0.6027633760716439]
        );
        let mut r = NumpyStream::new(0);
        assert_eq!(
            [
                r.uniform(-2.5, 2.5),
                r.uniform(-2.5, 2.5),
                r.uniform(-2.5, 2.5)
            ],
            [0.24406751963662376, 1.0759468318620975, 0.5138168803582195]
        );
        assert_eq!(NumpyStream::new(u32::MAX).random(), 0.0976320289940138);
    }

    #[test]
    fn gaussians_are_numpys_pairs_included() {
        let mut r = NumpyStream::new(0);
        let g: Vec<f64> = (0..5).map(|_| r.gauss()).collect();
        assert_eq!(
            g,
            [
                1.764052345967664,
                0.4001572083672233,
                0.9787379841057392,
                2.240893199201458,
                1.8675579901499675
            ]
        );
        let mut r = NumpyStream::new(0);
        let g: Vec<f64> = (0..3).map(|_| r.normal(0.1, 0.3)).collect();
        assert_eq!(
            g,
            [0.6292157037902991, 0.22004716251016698, 0.3936213952317218]
        );
    }

    #[test]
    fn integers_are_numpys() {
        let mut r = NumpyStream::new(12345);
        let v: Vec<i64> = (0..10).map(|_| r.randint(-3, 3)).collect();
        assert_eq!(v, [-1, 2, 2, -2, 1, -2, 2, -1, 2, -2]);
        assert_eq!(r.randint(0, 5), 1);
        // Draws of different kinds share one stream, in order.
        let mut r = NumpyStream::new(1);
        let u: Vec<f64> = (0..3).map(|_| r.random()).collect();
        let g: Vec<f64> = (0..3).map(|_| r.gauss()).collect();
        let k: Vec<i64> = (0..3).map(|_| r.randint(0, 100)).collect();
        assert_eq!(
            u,
            [
                0.417022004702574,
                0.7203244934421581,
                0.00011437481734488664
            ]
        );
        assert_eq!(
            g,
            [
                -0.8021728386486427,
                -0.4488778077207725,
                -1.1059350760083153
            ]
        );
        assert_eq!(k, [50, 20, 18]);
    }

    #[test]
    fn poisson_counts_are_numpys_on_both_branches() {
        let mut r = NumpyStream::new(7);
        let small: Vec<i64> = (0..8).map(|_| r.poisson(3.5)).collect();
        let large: Vec<i64> = (0..8).map(|_| r.poisson(42.0)).collect();
        assert_eq!(small, [2, 4, 4, 1, 4, 5, 4, 4]);
        assert_eq!(large, [47, 43, 41, 45, 41, 40, 35, 40]);
        assert_eq!(r.poisson(0.0), 0);
    }

    #[test]
    fn generators_are_numpys_default_rng() {
        assert_eq!(
            seed_sequence(12345),
            [
                13091511679009522556,
                13538552136045918767,
                7269824232120749972,
                4520223790601600371
            ]
        );
        for (seed, want) in [
            (
                0,
                [0.6369616873214543, 0.2697867137638703, 0.04097352393619469],
            ),
            (
                1,
                [0.5118216247002567, 0.9504636963259353, 0.14415961271963373],
            ),
            (
                12345,
                [0.22733602246716966, 0.31675833970975287, 0.7973654573327341],
            ),
            (
                u64::from(u32::MAX),
                [0.2519435680449965, 0.21906579628685663, 0.28728472043517017],
            ),
        ] {
            let mut g = NumpyGenerator::new(seed);
            assert_eq!([g.random(), g.random(), g.random()], want, "seed {seed}");
        }
    }

    #[test]
    fn loggam_is_ln_gamma() {
        // ln Γ(n) = ln((n − 1)!).
        let mut f = 0.0f64;
        for n in 2..30 {
            f += ((n - 1) as f64).ln();
            assert!((loggam(n as f64) - f).abs() < 1e-10 * f.max(1.0), "{n}");
        }
    }
}

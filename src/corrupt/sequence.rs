//! Perturbation sequences in the style of ImageNet-P (Hendrycks & Dietterich, ICLR 2019):
//! for each image, frames that change it a little at a time: noise drawn afresh per frame,
//! brightness and blur that rise, and translations, rotations, tilts and zooms that sweep.
//! The schedules are the reference's (`make_imagenet_p.py`), with pixel shifts scaled from
//! its 224-pixel crops to the image's width. Frames are 8-bit, as the reference's PNG frames
//! are; the reference then encodes them as H.264 video, which georob does not.

use std::fmt;

use transforms::nalgebra::Matrix3;
use transforms::{Batch, ImageLayout, ImageShape, MatrixWarp, Sampling, Warp};

use super::filter::{self, Border};
use super::{digital, noise, RgbPlanes, Rng};
use crate::error::{Error, Result};
use crate::spec::Channels;

/// One kind of perturbation sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Perturbation {
    /// The clean image, then 30 frames of `x + N(0, 0.03²)`, each drawn afresh.
    GaussianNoise,
    /// The clean image, then 30 frames of `Poisson(300 x) / 300`.
    ShotNoise,
    /// Value (HSV) shifted by −0.30 to +0.30 in steps of 0.02 (31 frames).
    Brightness,
    /// Gaussian blur of standard deviation 0.25 to 1.30 pixels in steps of 0.035.
    GaussianBlur,
    /// Horizontal shifts of −20 to +20 pixels of a 224-pixel-wide image, one per frame (41
    /// frames), scaled to the image's width.
    Translate,
    /// Rotations of −15° to +15° about the centre, 1° per frame.
    Rotate,
    /// The image plane tilted about both axes by −15° to +15° together, 1° per frame, seen
    /// in perspective from the distance of its diagonal.
    Tilt,
    /// Zooms about the centre by factors 0.40 to 1.15 in steps of 0.025.
    Scale,
}

impl Perturbation {
    /// Every kind, in report order.
    pub const ALL: [Perturbation; 8] = [
        Perturbation::GaussianNoise,
        Perturbation::ShotNoise,
        Perturbation::Brightness,
        Perturbation::GaussianBlur,
        Perturbation::Translate,
        Perturbation::Rotate,
        Perturbation::Tilt,
        Perturbation::Scale,
    ];

    /// The name used in parameters and report keys.
    pub fn name(self) -> &'static str {
        match self {
            Perturbation::GaussianNoise => "gaussian_noise",
            Perturbation::ShotNoise => "shot_noise",
            Perturbation::Brightness => "brightness",
            Perturbation::GaussianBlur => "gaussian_blur",
            Perturbation::Translate => "translate",
            Perturbation::Rotate => "rotate",
            Perturbation::Tilt => "tilt",
            Perturbation::Scale => "scale",
        }
    }

    /// Frames in a sequence, the first included.
    pub fn frames(self) -> usize {
        match self {
            Perturbation::Translate => 41,
            _ => 31,
        }
    }

    /// Whether the frames are independent draws around the first (noise), so that each is
    /// compared with the first frame rather than with the one before it.
    pub fn is_noise(self) -> bool {
        matches!(self, Perturbation::GaussianNoise | Perturbation::ShotNoise)
    }

    /// The sequence of the planar image `u` (`(C, H, W)` values in `[0, 1]`, channels in
    /// `channels`' order): `frames() × C·H·W` values, 8-bit. Noise is drawn from a stream
    /// seeded with `seed`.
    pub fn sequence(
        self,
        u: &[f32],
        channels: Channels,
        (width, height): (usize, usize),
        seed: u64,
    ) -> Result<Vec<f32>> {
        let d = u.len();
        let frames = self.frames();
        let mut out = vec![0.0f32; frames * d];
        match self.matrices(width, height) {
            Some(matrices) => {
                let c = d / (width * height);
                let tiled: Vec<f32> = u.iter().copied().cycle().take(frames * d).collect();
                let shape = ImageShape::new(frames, c, height, width);
                let batch = Batch::new(&tiled, shape, ImageLayout::Nchw)
                    .map_err(|e| Error::Config(format!("stability: {e}")))?;
                let sampling = Sampling::new(Default::default(), "zero".parse().expect("border"));
                let warped = MatrixWarp::new(matrices)
                    .apply(&batch, sampling)
                    .map_err(|e| Error::Config(format!("stability: {e}")))?;
                for (frame, w) in out.chunks_exact_mut(d).zip(warped.chunks_exact(d)) {
                    RgbPlanes::from_planar(w, channels, width, height).to_planar(channels, frame);
                }
            }
            None => {
                let picture = RgbPlanes::from_planar(u, channels, width, height);
                let rng = &mut Rng::from_u64(seed);
                for (j, frame) in out.chunks_exact_mut(d).enumerate() {
                    self.photometric(&picture, j, rng)
                        .to_planar(channels, frame);
                }
            }
        }
        Ok(out)
    }

    /// Frame `j` of a photometric sequence.
    fn photometric(self, picture: &RgbPlanes, j: usize, rng: &mut Rng) -> RgbPlanes {
        let step = j as f64;
        match self {
            Perturbation::GaussianNoise | Perturbation::ShotNoise if j == 0 => picture.clone(),
            Perturbation::GaussianNoise => noise::gaussian_by(picture, 0.03, rng),
            Perturbation::ShotNoise => noise::shot_by(picture, 300.0, rng),
            Perturbation::Brightness => digital::brightness_by(picture, (step - 15.0) * 0.02),
            _ => {
                let sigma = 0.25 + 0.035 * step;
                picture.map_planes(|p| filter::gaussian(p, sigma, sigma, 6.0, Border::Nearest))
            }
        }
    }

    /// The output-to-input matrices (centred pixel coordinates) of a geometric sequence,
    /// one per frame; `None` for the photometric ones.
    fn matrices(self, width: usize, height: usize) -> Option<Vec<Matrix3<f64>>> {
        let (w, h) = (width as f64, height as f64);
        let frame = |j: usize| j as f64;
        let m: Box<dyn Fn(usize) -> Matrix3<f64>> = match self {
            Perturbation::Translate => Box::new(|j| {
                let t = (frame(j) - 20.0) * w / 224.0;
                Matrix3::new(1.0, 0.0, -t, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
            }),
            Perturbation::Rotate => Box::new(|j| {
                let (s, c) = (frame(j) - 15.0).to_radians().sin_cos();
                Matrix3::new(c, s, 0.0, -s, c, 0.0, 0.0, 0.0, 1.0)
            }),
            Perturbation::Scale => Box::new(|j| {
                let k = 1.0 / ((frame(j) * 2.5 + 40.0) / 100.0);
                Matrix3::new(k, 0.0, 0.0, 0.0, k, 0.0, 0.0, 0.0, 1.0)
            }),
            Perturbation::Tilt => Box::new(|j| {
                let a = (frame(j) - 15.0).to_radians();
                tilt(a, a, w.hypot(h))
                    .try_inverse()
                    .expect("a tilt under 90° is invertible")
            }),
            _ => return None,
        };
        Some((0..self.frames()).map(m).collect())
    }
}

/// The homography that tilts the image plane by `theta` about the horizontal axis and `phi`
/// about the vertical one, then views it through a pinhole of focal length `f` from distance
/// `f` (centred pixel coordinates, input to output).
fn tilt(theta: f64, phi: f64, f: f64) -> Matrix3<f64> {
    let (st, ct) = theta.sin_cos();
    let (sp, cp) = phi.sin_cos();
    let rx = Matrix3::new(1.0, 0.0, 0.0, 0.0, ct, -st, 0.0, st, ct);
    let ry = Matrix3::new(cp, 0.0, -sp, 0.0, 1.0, 0.0, sp, 0.0, cp);
    let r = rx * ry;
    // A point (x, y, 0) of the plane goes to R (x, y, 0) + (0, 0, f), then to f X / Z, f Y / Z.
    let k = Matrix3::new(f, 0.0, 0.0, 0.0, f, 0.0, 0.0, 0.0, 1.0);
    let rt = Matrix3::new(
        r[(0, 0)],
        r[(0, 1)],
        0.0,
        r[(1, 0)],
        r[(1, 1)],
        0.0,
        r[(2, 0)],
        r[(2, 1)],
        f,
    );
    k * rt
}

impl fmt::Display for Perturbation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Perturbation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Perturbation::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Perturbation::ALL.iter().map(|p| p.name()).collect();
                Error::Config(format!(
                    "unknown perturbation {s:?}; known: {}",
                    names.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-channel 20×16 image with gradients and a bright square off the centre.
    fn image() -> Vec<f32> {
        let (w, h) = (20, 16);
        (0..3 * w * h)
            .map(|i| {
                let (c, y, x) = (i / (w * h), (i / w) % h, i % w);
                let square = (4..9).contains(&x) && (3..7).contains(&y);
                (0.1 + 0.02 * x as f32 + 0.01 * (y + c) as f32 + if square { 0.5 } else { 0.0 })
                    .min(1.0)
            })
            .collect()
    }

    fn sequence(p: Perturbation) -> Vec<f32> {
        p.sequence(&image(), Channels::Rgb, (20, 16), 7).unwrap()
    }

    #[test]
    fn the_middle_frame_of_a_sweep_is_the_image_itself() {
        let u = image();
        let quantised: Vec<f32> = u.iter().map(|v| (v * 255.0).round() / 255.0).collect();
        let d = u.len();
        for p in [
            Perturbation::Brightness,
            Perturbation::Translate,
            Perturbation::Rotate,
            Perturbation::Tilt,
        ] {
            let s = sequence(p);
            assert_eq!(s.len(), p.frames() * d);
            let middle = &s[(p.frames() / 2) * d..][..d];
            for (a, b) in middle.iter().zip(&quantised) {
                assert!((a - b).abs() <= 1.0 / 255.0 + 1e-6, "{p}: {a} against {b}");
            }
        }
        // Noise sequences start from the image itself.
        for p in [Perturbation::GaussianNoise, Perturbation::ShotNoise] {
            let s = sequence(p);
            for (a, b) in s[..d].iter().zip(&quantised) {
                assert!((a - b).abs() <= 1.0 / 255.0 + 1e-6, "{p}");
            }
        }
    }

    #[test]
    fn sweeps_move_the_square_as_their_schedules_say() {
        let d = image().len();
        let (w, h) = (20usize, 16usize);
        // The red channel's bright square, x from 4 to 8: its column sum's centre.
        let centre_x = |frame: &[f32]| {
            let col = |x: usize| (0..h).map(|y| frame[y * w + x]).sum::<f32>();
            let total: f32 = (0..w).map(col).sum();
            (0..w).map(|x| x as f32 * col(x)).sum::<f32>() / total
        };
        let s = sequence(Perturbation::Translate);
        let first = centre_x(&s[..d]);
        let last = centre_x(&s[40 * d..][..d]);
        // 40 frames of 20/224 px: the content moves right by about 3.6 px.
        assert!(last > first + 1.0, "{first} → {last}");
        // Brightness rises monotonically.
        let s = sequence(Perturbation::Brightness);
        let mean = |f: &[f32]| f.iter().sum::<f32>() / f.len() as f32;
        assert!(mean(&s[30 * d..][..d]) > mean(&s[15 * d..][..d]));
        assert!(mean(&s[15 * d..][..d]) > mean(&s[..d]));
        // Scale: the first frame (0.4×) leaves a dark border, the last (1.15×) none.
        let s = sequence(Perturbation::Scale);
        assert_eq!(s[0], 0.0);
        assert!(s[30 * d] > 0.0);
    }

    #[test]
    fn noise_frames_differ_and_repeat_with_the_seed() {
        let d = image().len();
        let s = sequence(Perturbation::GaussianNoise);
        assert_ne!(&s[d..2 * d], &s[2 * d..3 * d]);
        assert_eq!(s, sequence(Perturbation::GaussianNoise));
        let other = Perturbation::GaussianNoise
            .sequence(&image(), Channels::Rgb, (20, 16), 8)
            .unwrap();
        assert_ne!(s, other);
    }

    #[test]
    fn names_parse_back() {
        for p in Perturbation::ALL {
            assert_eq!(p.name().parse::<Perturbation>().unwrap(), p);
        }
        assert!("wobble".parse::<Perturbation>().is_err());
    }
}

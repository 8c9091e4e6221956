//! Interpolation and border handling: which input pixels a sample point reads, with which
//! weights, and how those weights change with the sample point.
//!
//! Pixel centres sit at integer coordinates: pixel `(x, y)` (column `x`, row `y`) covers
//! `[x − ½, x + ½) × [y − ½, y + ½)`, the image spans columns `0..w−1` and rows `0..h−1`.

use std::str::FromStr;

use crate::error::{Error, Result};

/// How values between pixel centres are interpolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Interpolation {
    /// The pixel whose centre is nearest, `⌊q + ½⌋` per axis (ties go up). Piecewise constant, so
    /// its derivative with respect to the sample point is zero.
    Nearest,
    /// Bilinear interpolation of the four surrounding pixel centres. Its derivative with respect
    /// to the sample point is the one-sided derivative from the cell `[⌊q⌋, ⌊q⌋ + 1)`; it is
    /// continuous except on the grid lines.
    #[default]
    Bilinear,
}

/// What the image holds outside `0..w−1 × 0..h−1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Border {
    /// Zero outside (in the units of the images given, e.g. `[0, 1]` pixel values).
    #[default]
    Zero,
    /// The nearest edge pixel (equivalently, sample points clamped to the image; stAdv's choice).
    Replicate,
    /// Mirrored about the edge pixel centres without repeating them (`… c b | a b c … | b a …`,
    /// NumPy `reflect`, OpenCV `BORDER_REFLECT_101`).
    Reflect,
}

impl Border {
    /// Lower-case name, `"zero"`, `"replicate"` or `"reflect"`.
    pub fn name(self) -> &'static str {
        match self {
            Border::Zero => "zero",
            Border::Replicate => "replicate",
            Border::Reflect => "reflect",
        }
    }

    /// The in-image index read for integer position `i` along an axis of `len` pixels, or
    /// `None` when the border is zero there.
    pub fn resolve(self, i: i64, len: usize) -> Option<usize> {
        if len == 0 {
            return None;
        }
        let last = len as i64 - 1;
        if (0..=last).contains(&i) {
            return Some(i as usize);
        }
        match self {
            Border::Zero => None,
            Border::Replicate => Some(i.clamp(0, last) as usize),
            Border::Reflect if last == 0 => Some(0),
            Border::Reflect => {
                let period = 2 * last;
                let m = i.rem_euclid(period);
                Some(if m > last { period - m } else { m } as usize)
            }
        }
    }
}

display_by_name!(Border);

impl FromStr for Border {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "zero" | "constant" => Ok(Border::Zero),
            "replicate" | "clamp" | "edge" => Ok(Border::Replicate),
            "reflect" | "mirror" => Ok(Border::Reflect),
            _ => Err(Error::UnknownName {
                what: "border mode",
                name: s.to_string(),
                expected: "zero, replicate or reflect",
            }),
        }
    }
}

impl Interpolation {
    /// Lower-case name, `"nearest"` or `"bilinear"`.
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
        }
    }
}

display_by_name!(Interpolation);

impl FromStr for Interpolation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nearest" => Ok(Interpolation::Nearest),
            "bilinear" | "linear" => Ok(Interpolation::Bilinear),
            _ => Err(Error::UnknownName {
                what: "interpolation",
                name: s.to_string(),
                expected: "nearest or bilinear",
            }),
        }
    }
}

/// Interpolation plus border mode: everything needed to read an image at a real point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sampling {
    /// Interpolation between pixel centres.
    pub interpolation: Interpolation,
    /// Values outside the image.
    pub border: Border,
}

impl Sampling {
    /// Sampling with the given interpolation and border.
    pub fn new(interpolation: Interpolation, border: Border) -> Self {
        Self {
            interpolation,
            border,
        }
    }

    /// The pixels read at point `q = [x, y]` (pixel units) of an `h × w` image.
    pub(crate) fn stencil(&self, q: [f64; 2], h: usize, w: usize) -> Stencil {
        let mut stencil = Stencil::default();
        let border = self.border;
        match self.interpolation {
            Interpolation::Nearest => {
                let xi = (q[0] + 0.5).floor() as i64;
                let yi = (q[1] + 0.5).floor() as i64;
                if let (Some(x), Some(y)) = (border.resolve(xi, w), border.resolve(yi, h)) {
                    stencil.push(Tap {
                        x,
                        y,
                        weight: 1.0,
                        dx: 0.0,
                        dy: 0.0,
                    });
                }
            }
            Interpolation::Bilinear => {
                let (x0f, y0f) = (q[0].floor(), q[1].floor());
                let (fx, fy) = (q[0] - x0f, q[1] - y0f);
                let (x0, y0) = (x0f as i64, y0f as i64);
                let xs = [
                    (border.resolve(x0, w), 1.0 - fx, -1.0),
                    (border.resolve(x0.saturating_add(1), w), fx, 1.0),
                ];
                let ys = [
                    (border.resolve(y0, h), 1.0 - fy, -1.0),
                    (border.resolve(y0.saturating_add(1), h), fy, 1.0),
                ];
                for &(yi, wy, dwy) in &ys {
                    for &(xi, wx, dwx) in &xs {
                        if let (Some(x), Some(y)) = (xi, yi) {
                            stencil.push(Tap {
                                x,
                                y,
                                weight: wx * wy,
                                dx: dwx * wy,
                                dy: wx * dwy,
                            });
                        }
                    }
                }
            }
        }
        stencil
    }
}

/// One input pixel read by a sample: its position, weight and the weight's derivatives with
/// respect to the sample point's `x` and `y`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Tap {
    pub(crate) x: usize,
    pub(crate) y: usize,
    pub(crate) weight: f64,
    pub(crate) dx: f64,
    pub(crate) dy: f64,
}

/// Up to four taps; taps that fall on a zero border are left out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Stencil {
    len: usize,
    taps: [Tap; 4],
}

impl Stencil {
    fn push(&mut self, tap: Tap) {
        self.taps[self.len] = tap;
        self.len += 1;
    }

    /// The taps in use.
    pub(crate) fn taps(&self) -> &[Tap] {
        &self.taps[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn border_resolve() {
        let idx = |b: Border| (-4..9).map(|i| b.resolve(i, 4)).collect::<Vec<_>>();
        let s = Some;
        assert_eq!(
            idx(Border::Zero),
            [
                None,
                None,
                None,
                None,
                s(0),
                s(1),
                s(2),
                s(3),
                None,
                None,
                None,
                None,
                None
            ]
        );
        assert_eq!(
            idx(Border::Replicate),
            [
                s(0),
                s(0),
                s(0),
                s(0),
                s(0),
                s(1),
                s(2),
                s(3),
                s(3),
                s(3),
                s(3),
                s(3),
                s(3)
            ]
        );
        // … 2 1 | 0 1 2 3 | 2 1 0 1 2 …
        assert_eq!(
            idx(Border::Reflect),
            [
                s(2),
                s(3),
                s(2),
                s(1),
                s(0),
                s(1),
                s(2),
                s(3),
                s(2),
                s(1),
                s(0),
                s(1),
                s(2)
            ]
        );
        assert_eq!(Border::Reflect.resolve(-3, 1), Some(0));
        assert_eq!(Border::Replicate.resolve(0, 0), None);
    }

    #[test]
    fn bilinear_weights_sum_to_one_and_derivatives_to_zero() {
        let s = Sampling::new(Interpolation::Bilinear, Border::Replicate);
        let st = s.stencil([1.3, 2.6], 5, 4);
        let taps = st.taps();
        assert_eq!(taps.len(), 4);
        let sum: f64 = taps.iter().map(|t| t.weight).sum();
        assert!((sum - 1.0).abs() < 1e-15);
        assert!(taps.iter().map(|t| t.dx).sum::<f64>().abs() < 1e-15);
        assert!(taps.iter().map(|t| t.dy).sum::<f64>().abs() < 1e-15);
        let first = taps[0];
        assert_eq!((first.x, first.y), (1, 2));
        assert!((first.weight - 0.7 * 0.4).abs() < 1e-12);
    }

    #[test]
    fn zero_border_drops_outside_taps() {
        let s = Sampling::default();
        assert_eq!(s.stencil([-0.5, 0.0], 3, 3).taps().len(), 2);
        assert_eq!(s.stencil([-2.0, 0.0], 3, 3).taps().len(), 0);
    }

    #[test]
    fn nearest_rounds_half_up() {
        let s = Sampling::new(Interpolation::Nearest, Border::Zero);
        let t = s.stencil([1.5, 0.49], 3, 3).taps()[0];
        assert_eq!((t.x, t.y, t.weight, t.dx), (2, 0, 1.0, 0.0));
    }

    #[test]
    fn names_parse() {
        assert_eq!("reflect".parse::<Border>().unwrap(), Border::Reflect);
        assert_eq!("Zero".parse::<Border>().unwrap(), Border::Zero);
        assert_eq!(
            "nearest".parse::<Interpolation>().unwrap(),
            Interpolation::Nearest
        );
        assert!("cubic".parse::<Interpolation>().is_err());
    }
}

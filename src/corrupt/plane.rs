//! The images corruptions work on: planes of `f32` values, row-major.

use image::{GrayImage, RgbImage};

use crate::spec::Channels;

/// One channel: `height × width` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// The values, row after row.
    pub values: Vec<f32>,
}

impl Plane {
    /// A plane of `value`.
    pub fn filled(width: usize, height: usize, value: f32) -> Self {
        Plane {
            width,
            height,
            values: vec![value; width * height],
        }
    }

    /// A plane whose value at column `x`, row `y` is `f(x, y)`.
    pub fn from_fn(width: usize, height: usize, mut f: impl FnMut(usize, usize) -> f32) -> Self {
        let mut values = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                values.push(f(x, y));
            }
        }
        Plane {
            width,
            height,
            values,
        }
    }

    /// The value at column `x`, row `y`.
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.values[y * self.width + x]
    }

    /// This plane with `f` applied to every value.
    pub fn map(&self, mut f: impl FnMut(f32) -> f32) -> Plane {
        Plane {
            values: self.values.iter().map(|&v| f(v)).collect(),
            ..*self
        }
    }

    /// The top-left `width × height` part.
    pub fn crop(&self, width: usize, height: usize) -> Plane {
        Plane::from_fn(width, height, |x, y| self.at(x, y))
    }
}

/// An RGB image as three planes of values in `[0, 1]` (one grey level is 1/255).
#[derive(Debug, Clone, PartialEq)]
pub struct RgbPlanes {
    /// Red, green and blue.
    pub planes: [Plane; 3],
}

impl RgbPlanes {
    /// The image `rgb`, grey level `v` as `v / 255`.
    pub fn from_rgb8(rgb: &RgbImage) -> Self {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let channel = |c: usize| {
            Plane::from_fn(w, h, |x, y| {
                f32::from(rgb.get_pixel(x as u32, y as u32)[c]) / 255.0
            })
        };
        RgbPlanes {
            planes: [channel(0), channel(1), channel(2)],
        }
    }

    /// A gray image replicated to RGB, as the reference does with 1-channel images.
    pub fn from_gray8(gray: &GrayImage) -> Self {
        let (w, h) = (gray.width() as usize, gray.height() as usize);
        let p = Plane::from_fn(w, h, |x, y| {
            f32::from(gray.get_pixel(x as u32, y as u32)[0]) / 255.0
        });
        RgbPlanes {
            planes: [p.clone(), p.clone(), p],
        }
    }

    /// From planar image-space values `(C, H, W)` in `channels`' order (gray replicated),
    /// rounded to 8 bits as an image file holds them.
    pub fn from_planar(u: &[f32], channels: Channels, width: usize, height: usize) -> Self {
        let n = width * height;
        let plane = |c: usize| Plane {
            width,
            height,
            values: u[c * n..(c + 1) * n]
                .iter()
                .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() / 255.0)
                .collect(),
        };
        let planes = match channels {
            Channels::Gray => [plane(0), plane(0), plane(0)],
            Channels::Rgb => [plane(0), plane(1), plane(2)],
            Channels::Bgr => [plane(2), plane(1), plane(0)],
        };
        RgbPlanes { planes }
    }

    /// Planar image-space values `(C, H, W)` in `channels`' order (gray: the first channel),
    /// truncated to 8 bits like [`RgbPlanes::to_rgb8`], into `out`.
    pub fn to_planar(&self, channels: Channels, out: &mut [f32]) {
        let order: &[usize] = match channels {
            Channels::Gray => &[0],
            Channels::Rgb => &[0, 1, 2],
            Channels::Bgr => &[2, 1, 0],
        };
        let n = self.width() * self.height();
        for (slot, &c) in order.iter().enumerate() {
            for (o, &v) in out[slot * n..(slot + 1) * n]
                .iter_mut()
                .zip(&self.planes[c].values)
            {
                *o = f32::from(to_u8(v)) / 255.0;
            }
        }
    }

    /// Columns.
    pub fn width(&self) -> usize {
        self.planes[0].width
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.planes[0].height
    }

    /// This image with `f` applied to every plane.
    pub fn map_planes(&self, mut f: impl FnMut(&Plane) -> Plane) -> RgbPlanes {
        RgbPlanes {
            planes: [f(&self.planes[0]), f(&self.planes[1]), f(&self.planes[2])],
        }
    }

    /// This image with `f` applied to every value.
    pub fn map(&self, mut f: impl FnMut(f32) -> f32) -> RgbPlanes {
        self.map_planes(|p| p.map(&mut f))
    }

    /// This image with `f` applied to every pixel's `[r, g, b]`.
    pub fn map_pixels(&self, f: impl Fn([f32; 3]) -> [f32; 3]) -> RgbPlanes {
        let mut out = self.clone();
        for i in 0..self.planes[0].values.len() {
            let rgb = f([
                self.planes[0].values[i],
                self.planes[1].values[i],
                self.planes[2].values[i],
            ]);
            for (plane, v) in out.planes.iter_mut().zip(rgb) {
                plane.values[i] = v;
            }
        }
        out
    }

    /// `a x + b` for every value `x`, clipped to `[0, 1]`, with `(a, b) = f(pixel index, channel)`.
    pub fn blend(&self, f: impl Fn(usize, usize) -> (f32, f32)) -> RgbPlanes {
        let mut out = self.clone();
        for (c, plane) in out.planes.iter_mut().enumerate() {
            for (i, v) in plane.values.iter_mut().enumerate() {
                let (a, b) = f(i, c);
                *v = (a * *v + b).clamp(0.0, 1.0);
            }
        }
        out
    }

    /// The 8-bit image: values clipped to `[0, 1]`, times 255, truncated (the reference's
    /// `np.uint8` of its float result).
    pub fn to_rgb8(&self) -> RgbImage {
        RgbImage::from_fn(self.width() as u32, self.height() as u32, |x, y| {
            let i = y as usize * self.width() + x as usize;
            image::Rgb(self.planes.each_ref().map(|p| to_u8(p.values[i])))
        })
    }

    /// Back to one channel for an image that was gray: the red plane, as the reference
    /// keeps the first channel.
    pub fn to_gray8(&self) -> GrayImage {
        let p = &self.planes[0];
        GrayImage::from_fn(p.width as u32, p.height as u32, |x, y| {
            image::Luma([to_u8(p.at(x as usize, y as usize))])
        })
    }
}

/// A value in `[0, 1]` as a grey level: clipped, times 255, truncated.
pub(crate) fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0) as u8
}

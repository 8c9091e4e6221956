//! Pictures that measures save as artifacts: planar `(C, H, W)` values
//! (one or three channels) mapped to 8-bit RGB, panels side by side.

use std::path::Path;

use image::{imageops, Rgb, RgbImage};

use crate::error::{Error, Result};

/// `(C, H, W)` values as an RGB image, each value mapped by `f` into
/// `[0, 1]` (clamped); `None` unless `C` is 1 or 3 and the sizes agree.
pub fn to_rgb(
    v: &[f32],
    (c, h, w): (usize, usize, usize),
    f: impl Fn(f32) -> f32,
) -> Option<RgbImage> {
    if !(c == 1 || c == 3) || v.len() != c * h * w {
        return None;
    }
    let byte = |x: f32| (f(x).clamp(0.0, 1.0) * 255.0).round() as u8;
    Some(RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let at = |ch: usize| v[ch * h * w + y as usize * w + x as usize];
        if c == 1 {
            let g = byte(at(0));
            Rgb([g, g, g])
        } else {
            Rgb([byte(at(0)), byte(at(1)), byte(at(2))])
        }
    }))
}

/// Panels side by side with a white gap, enlarged (nearest neighbour) so
/// that small inputs stay visible.
pub fn panels(images: &[RgbImage]) -> RgbImage {
    let (w, h) = images.first().map(|i| i.dimensions()).unwrap_or((1, 1));
    let scale = (128 / h.max(1)).max(1);
    let (pw, ph) = (w * scale, h * scale);
    let gap = 6;
    let n = images.len() as u32;
    let mut out = RgbImage::from_pixel(
        n * pw + (n.saturating_sub(1)) * gap,
        ph,
        Rgb([255, 255, 255]),
    );
    for (i, img) in images.iter().enumerate() {
        let big = imageops::resize(img, pw, ph, imageops::FilterType::Nearest);
        imageops::replace(&mut out, &big, i as i64 * (pw + gap) as i64, 0);
    }
    out
}

/// Rows of images as one grid of `side × side` tiles (resized: nearest neighbour up, a
/// triangle filter down) with a white gap, e.g. corruptions by severity.
pub fn grid(rows: &[Vec<RgbImage>], side: u32) -> RgbImage {
    let gap = 4;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let n = rows.len() as u32;
    let span = |k: u32| (k * (side + gap)).saturating_sub(gap).max(1);
    let mut out = RgbImage::from_pixel(span(cols), span(n), Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let filter = if img.height() < side {
                imageops::FilterType::Nearest
            } else {
                imageops::FilterType::Triangle
            };
            let tile = imageops::resize(img, side, side, filter);
            let at = |k: usize| i64::from(k as u32 * (side + gap));
            imageops::replace(&mut out, &tile, at(c), at(r));
        }
    }
    out
}

/// Saves `img` as PNG.
pub fn save(img: &RgbImage, path: &Path) -> Result<()> {
    let mut out = std::io::BufWriter::new(crate::write::create(path)?);
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))
}

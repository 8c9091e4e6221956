//! Decoding an image file into image space: planar `(C, H, W)` floats in
//! `[0, 1]` at the model's size and channel order.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader};

use crate::error::{Error, Result};
use crate::spec::{Channels, InputSpec};

/// Reads `path`, converts its channels to `spec.channels` (gray, RGB and
/// RGBA inputs are accepted; alpha is dropped), resizes it bilinearly to
/// `spec.height × spec.width` when it is another size, and writes planar
/// `(C, H, W)` values in `[0, 1]` into `out`.
pub fn read_image_space(path: &Path, spec: &InputSpec, out: &mut [f32]) -> Result<()> {
    image_space(decode(path)?, spec, out);
    Ok(())
}

/// `img` as [`read_image_space`] writes a file's image: planar `(C, H, W)` values in `[0, 1]`
/// at the model's size and channels.
pub fn image_space(img: DynamicImage, spec: &InputSpec, out: &mut [f32]) {
    let (h, w) = (spec.height, spec.width);
    let img = if (img.height() as usize, img.width() as usize) == (h, w) {
        img
    } else {
        img.resize_exact(w as u32, h as u32, FilterType::Triangle)
    };
    let plane = h * w;
    debug_assert_eq!(out.len(), plane * spec.channels.count());
    match spec.channels {
        Channels::Gray => {
            let g = img.to_luma32f();
            out.copy_from_slice(g.as_raw());
        }
        Channels::Rgb | Channels::Bgr => {
            let rgb = img.to_rgb32f();
            for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
                let (r, g, b) = (px[0], px[1], px[2]);
                let (c0, c2) = if spec.channels == Channels::Bgr {
                    (b, r)
                } else {
                    (r, b)
                };
                out[i] = c0;
                out[plane + i] = g;
                out[2 * plane + i] = c2;
            }
        }
    }
}

/// Decodes an image file, naming the file and the problem on failure.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    let bytes = crate::read::bytes(path, crate::read::IMAGE_CAP)?;
    let reader = ImageReader::new(std::io::Cursor::new(bytes.as_slice()))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(Error::image(
            path,
            "not a PNG or JPEG image (unrecognised format)",
        ));
    }
    let format = reader.format();
    let img = reader
        .decode()
        .map_err(|e| Error::image(path, format!("cannot decode image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::image(path, "the image is empty (0 pixels)"));
    }
    if let Some(why) = truncated(format, &bytes) {
        return Err(Error::image(path, why));
    }
    Ok(img)
}

/// Why a decoded file of `format` is cut short, if it is: the decoders fill what is missing
/// (grey blocks of a JPEG, the last rows of a PNG) without an error. A JPEG must end with its
/// end-of-image marker (trailing padding aside), a PNG must hold its `IEND` chunk.
fn truncated(format: Option<ImageFormat>, bytes: &[u8]) -> Option<&'static str> {
    match format {
        Some(ImageFormat::Jpeg) => {
            let end = bytes
                .iter()
                .rposition(|b| !matches!(b, 0 | b' ' | b'\t' | b'\r' | b'\n'))
                .map_or(0, |i| i + 1);
            (!bytes[..end].ends_with(&[0xFF, 0xD9]))
                .then_some("truncated JPEG: the file does not end with the end-of-image marker")
        }
        Some(ImageFormat::Png) => {
            const IEND: &[u8] = b"IEND\xAE\x42\x60\x82";
            (!bytes.windows(IEND.len()).any(|w| w == IEND))
                .then_some("truncated PNG: the file has no complete IEND chunk")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Layout;
    use crate::testutil::spec;

    #[test]
    fn rgb_png_reads_exactly_and_bgr_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        let img =
            image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 100, y as u8 * 200, 51]));
        img.save(&p).unwrap();
        let s = spec(Layout::Nchw, Channels::Rgb, 2, 3);
        let mut out = vec![0.0; 18];
        read_image_space(&p, &s, &mut out).unwrap();
        assert_eq!(out[2], 200.0 / 255.0); // red of (x=2, y=0)
        assert_eq!(out[6 + 3], 200.0 / 255.0); // green of (x=0, y=1)
        assert_eq!(out[12], 51.0 / 255.0);
        let s = spec(Layout::Nchw, Channels::Bgr, 2, 3);
        read_image_space(&p, &s, &mut out).unwrap();
        assert_eq!(out[0], 51.0 / 255.0);
        assert_eq!(out[12 + 2], 200.0 / 255.0);
    }

    #[test]
    fn rgba_and_gray_convert_and_resize() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        image::RgbaImage::from_pixel(8, 8, image::Rgba([255, 255, 255, 0]))
            .save(&p)
            .unwrap();
        let s = spec(Layout::Nchw, Channels::Gray, 4, 4);
        let mut out = vec![0.0; 16];
        read_image_space(&p, &s, &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn images_cut_short_are_refused_though_they_decode() {
        let dir = tempfile::tempdir().unwrap();
        let mut png = Vec::new();
        image::RgbImage::new(16, 16)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let mut jpeg = Vec::new();
        image::RgbImage::new(16, 16)
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        for (name, bytes, why) in [
            ("a.png", &png, "truncated PNG"),
            ("a.jpg", &jpeg, "truncated JPEG"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            assert!(decode(&p).is_ok(), "{name}");
            std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
            let e = decode(&p).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(why), "{e}");
        }
        // Padding after a JPEG's end-of-image marker is no truncation.
        let p = dir.path().join("padded.jpg");
        std::fs::write(&p, [jpeg.as_slice(), &[0, 0, b'\n']].concat()).unwrap();
        assert!(decode(&p).is_ok());
    }

    #[test]
    fn corrupt_and_non_images_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.png");
        let mut bytes = Vec::new();
        image::RgbImage::new(16, 16)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let s = spec(Layout::Nchw, Channels::Rgb, 16, 16);
        let mut out = vec![0.0; 768];
        let e = read_image_space(&p, &s, &mut out).unwrap_err().to_string();
        assert!(e.contains("bad.png") && e.contains("decode"), "{e}");
        let q = dir.path().join("text.png");
        std::fs::write(&q, b"hello, not an image").unwrap();
        let e = read_image_space(&q, &s, &mut out).unwrap_err().to_string();
        assert!(e.contains("text.png"), "{e}");
    }
}

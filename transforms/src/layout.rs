//! Image batch shapes and memory layouts.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Logical shape of an image batch: `n` images of `c` channels, `h` rows and `w` columns,
/// whatever the memory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageShape {
    /// Number of images in the batch.
    pub n: usize,
    /// Channels per image.
    pub c: usize,
    /// Rows (height, pixels).
    pub h: usize,
    /// Columns (width, pixels).
    pub w: usize,
}

impl ImageShape {
    /// A shape of `n` images, each `c × h × w`.
    pub fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self { n, c, h, w }
    }

    /// Values in the whole batch, `n·c·h·w`.
    pub fn len(&self) -> usize {
        self.n * self.image_len()
    }

    /// Whether the batch holds no value at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values in one image, `c·h·w`.
    pub fn image_len(&self) -> usize {
        self.c * self.pixels()
    }

    /// Pixels in one image plane, `h·w`.
    pub fn pixels(&self) -> usize {
        self.h * self.w
    }

    /// The same images with another batch size.
    pub fn with_n(&self, n: usize) -> Self {
        Self { n, ..*self }
    }

    /// Checks that a buffer named `what` holds exactly `len()` values.
    pub(crate) fn check_len(&self, what: &'static str, got: usize) -> Result<()> {
        if got == self.len() {
            Ok(())
        } else {
            Err(Error::DataLength {
                what,
                shape: self.to_string(),
                expected: self.len(),
                got,
            })
        }
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(n={}, c={}, h={}, w={})",
            self.n, self.c, self.h, self.w
        )
    }
}

/// Memory order of an image batch. Images are always contiguous blocks of `c·h·w` values,
/// image `i` starting at `i·c·h·w`; the layout orders the values inside an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ImageLayout {
    /// Channel planes: value `(i, c, y, x)` at `((i·C + c)·H + y)·W + x` (PyTorch, ONNX).
    #[default]
    Nchw,
    /// Interleaved channels: value `(i, c, y, x)` at `((i·H + y)·W + x)·C + c` (TensorFlow).
    Nhwc,
}

impl ImageLayout {
    /// Lower-case name, `"nchw"` or `"nhwc"`.
    pub fn name(self) -> &'static str {
        match self {
            ImageLayout::Nchw => "nchw",
            ImageLayout::Nhwc => "nhwc",
        }
    }

    /// Offset of value `(image, channel, y, x)` in a batch of `shape`.
    pub fn index(
        self,
        shape: &ImageShape,
        image: usize,
        channel: usize,
        y: usize,
        x: usize,
    ) -> usize {
        image * shape.image_len() + self.strides(shape).offset(channel, y, x)
    }

    /// Strides of channel, row and column inside one image.
    pub(crate) fn strides(self, shape: &ImageShape) -> Strides {
        match self {
            ImageLayout::Nchw => Strides {
                c: shape.pixels(),
                y: shape.w,
                x: 1,
            },
            ImageLayout::Nhwc => Strides {
                c: 1,
                y: shape.w * shape.c,
                x: shape.c,
            },
        }
    }
}

display_by_name!(ImageLayout);

impl FromStr for ImageLayout {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "nchw" => Ok(ImageLayout::Nchw),
            "nhwc" => Ok(ImageLayout::Nhwc),
            _ => Err(Error::UnknownName {
                what: "image layout",
                name: s.to_string(),
                expected: "nchw or nhwc",
            }),
        }
    }
}

/// Strides (in values) of channel, row and column within one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Strides {
    pub(crate) c: usize,
    pub(crate) y: usize,
    pub(crate) x: usize,
}

impl Strides {
    /// Offset of `(channel, y, x)` inside one image.
    pub(crate) fn offset(&self, channel: usize, y: usize, x: usize) -> usize {
        channel * self.c + y * self.y + x * self.x
    }
}

/// A borrowed, shape-checked batch of `f32` images.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    data: &'a [f32],
    shape: ImageShape,
    layout: ImageLayout,
}

impl<'a> Batch<'a> {
    /// Wraps `data` (`shape.len()` values in `layout` order); fails on a length mismatch.
    pub fn new(data: &'a [f32], shape: ImageShape, layout: ImageLayout) -> Result<Self> {
        shape.check_len("image batch", data.len())?;
        Ok(Self {
            data,
            shape,
            layout,
        })
    }

    /// All values, in `layout()` order.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Logical shape.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Memory layout.
    pub fn layout(&self) -> ImageLayout {
        self.layout
    }

    /// The `c·h·w` values of image `i`, in `layout()` order; panics if `i ≥ n`.
    pub fn image(&self, i: usize) -> &'a [f32] {
        let len = self.shape.image_len();
        &self.data[i * len..(i + 1) * len]
    }
}

/// Copies a batch of `shape` from layout `from` into layout `to` (a transposition).
pub fn convert_layout<T: Copy>(
    data: &[T],
    shape: ImageShape,
    from: ImageLayout,
    to: ImageLayout,
) -> Result<Vec<T>> {
    shape.check_len("image batch", data.len())?;
    if from == to {
        return Ok(data.to_vec());
    }
    let mut out = data.to_vec();
    let (src, dst) = (from.strides(&shape), to.strides(&shape));
    let image_len = shape.image_len();
    for i in 0..shape.n {
        let base = i * image_len;
        for c in 0..shape.c {
            for y in 0..shape.h {
                for x in 0..shape.w {
                    out[base + dst.offset(c, y, x)] = data[base + src.offset(c, y, x)];
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_documented_formulas() {
        let s = ImageShape::new(2, 3, 4, 5);
        assert_eq!(
            ImageLayout::Nchw.index(&s, 1, 2, 3, 4),
            ((3 + 2) * 4 + 3) * 5 + 4
        );
        assert_eq!(
            ImageLayout::Nhwc.index(&s, 1, 2, 3, 4),
            ((4 + 3) * 5 + 4) * 3 + 2
        );
    }

    #[test]
    fn every_index_is_hit_once() {
        let s = ImageShape::new(2, 3, 4, 5);
        for layout in [ImageLayout::Nchw, ImageLayout::Nhwc] {
            let mut seen = vec![false; s.len()];
            for i in 0..s.n {
                for c in 0..s.c {
                    for y in 0..s.h {
                        for x in 0..s.w {
                            let k = layout.index(&s, i, c, y, x);
                            assert!(!seen[k]);
                            seen[k] = true;
                        }
                    }
                }
            }
            assert!(seen.iter().all(|&b| b));
        }
    }

    #[test]
    fn convert_layout_round_trips() {
        let s = ImageShape::new(2, 3, 4, 5);
        let data: Vec<f32> = (0..s.len()).map(|k| k as f32).collect();
        let nhwc = convert_layout(&data, s, ImageLayout::Nchw, ImageLayout::Nhwc).unwrap();
        assert_eq!(
            nhwc[ImageLayout::Nhwc.index(&s, 1, 2, 3, 1)],
            data[ImageLayout::Nchw.index(&s, 1, 2, 3, 1)]
        );
        let back = convert_layout(&nhwc, s, ImageLayout::Nhwc, ImageLayout::Nchw).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn batch_rejects_wrong_length() {
        let s = ImageShape::new(1, 3, 2, 2);
        let err = Batch::new(&[0.0; 11], s, ImageLayout::Nchw).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image batch has 11 values, its shape (n=1, c=3, h=2, w=2) needs 12"
        );
    }

    #[test]
    fn layout_parses_case_insensitively() {
        assert_eq!("NHWC".parse::<ImageLayout>().unwrap(), ImageLayout::Nhwc);
        assert_eq!("nchw".parse::<ImageLayout>().unwrap(), ImageLayout::Nchw);
        assert!("chw".parse::<ImageLayout>().is_err());
    }
}

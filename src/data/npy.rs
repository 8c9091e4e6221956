//! `.npy` tensors already in model space (float32 or float64 in either byte
//! order, C order, first axis = samples), read row range by row range as
//! float32; uint8 arrays of images; and integer label vectors.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use npyz::{DType, NpyFile, Order, TypeChar};

use crate::error::{Error, Result};

/// A float `.npy` file whose rows are samples.
#[derive(Debug, Clone)]
pub(crate) struct NpyTensor {
    path: PathBuf,
    /// Bytes per element: 4 (float32) or 8 (float64, narrowed to float32 on reading).
    width: u64,
    /// Number of samples.
    pub rows: usize,
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
}

/// Checks that the values the header's `shape` promises, `width` bytes each, can be counted
/// and are among the `available` bytes of data of `path`: a header claiming more is refused
/// before anything is allocated for it. Returns the number of values.
fn promised(path: &Path, shape: &[usize], width: u64, available: u64) -> Result<usize> {
    let total = crate::limits::elements(shape);
    match total.and_then(|t| (t as u64).checked_mul(width)) {
        Some(bytes) if bytes <= available => Ok(total.unwrap_or_default()),
        Some(bytes) => Err(Error::data(
            path,
            format!(
                "truncated: the header promises {} values ({bytes} bytes) but the file holds {available} bytes of data",
                total.unwrap_or_default()
            ),
        )),
        None => Err(Error::data(
            path,
            format!("the header's shape {shape:?} holds more values than memory can address"),
        )),
    }
}

/// The length of `path` in bytes, an upper bound on its data.
fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len())
}

/// The dimensions in the `shape` entry of a `.npy` header, from the file's first bytes
/// `head`, when they can be read.
fn header_shape(head: &[u8]) -> Option<Vec<u64>> {
    let text = String::from_utf8_lossy(head);
    let after = &text[text.find("'shape'")?..];
    let open = after.find('(')? + 1;
    let close = open + after[open..].find(')')?;
    let inner = &after[open..close];
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().ok())
        .collect()
}

fn open(path: &Path) -> Result<NpyFile<BufReader<File>>> {
    let mut file = crate::read::open(path, u64::MAX)?;
    // npyz multiplies the header's dimensions without checking for overflow, also into
    // strides, which skip a dimension of 0 (shape (0, 2^64-1, 2) holds no value but its
    // strides overflow): a header whose dimensions other than 0 overflow together is
    // refused here first.
    let mut head = Vec::new();
    (&mut file)
        .take(1 << 16)
        .read_to_end(&mut head)
        .and_then(|_| file.rewind())
        .map_err(|e| Error::io(path, e))?;
    if let Some(shape) = header_shape(&head) {
        if shape
            .iter()
            .try_fold(8u64, |n, &d| n.checked_mul(d.max(1)))
            .is_none()
        {
            return Err(Error::data(
                path,
                format!("the header's shape {shape:?} holds more values than memory can address"),
            ));
        }
    }
    NpyFile::new(BufReader::new(file))
        .map_err(|e| Error::data(path, format!("not a valid .npy file: {e}")))
}

fn type_str(dtype: &DType) -> String {
    match dtype {
        DType::Plain(t) => t.to_string(),
        other => format!("{other:?}"),
    }
}

impl NpyTensor {
    /// Opens `path` and checks dtype, order, rank and file length.
    pub fn open(path: &Path) -> Result<Self> {
        let npy = open(path)?;
        let width = match npy.dtype() {
            DType::Plain(t)
                if t.type_char() == TypeChar::Float && matches!(t.size_field(), 4 | 8) =>
            {
                t.size_field()
            }
            other => {
                return Err(Error::data(
                    path,
                    format!(
                        "element type is {}; georob reads float32 or float64 tensors",
                        type_str(&other)
                    ),
                ))
            }
        };
        if npy.order() != Order::C {
            return Err(Error::data(
                path,
                "Fortran-ordered arrays are not supported; save with C order",
            ));
        }
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        if shape.len() != 4 {
            return Err(Error::data(
                path,
                format!(
                    "shape {shape:?} has rank {}; expected (N, C, H, W) or (N, H, W, C)",
                    shape.len()
                ),
            ));
        }
        if shape[1..].contains(&0) {
            return Err(Error::data(
                path,
                format!("shape {shape:?}: a sample of no values is not an image"),
            ));
        }
        let mut reader = npy.into_inner();
        let data_start = reader.stream_position().map_err(|e| Error::io(path, e))?;
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        promised(path, &shape, width, len.saturating_sub(data_start))?;
        Ok(NpyTensor {
            path: path.to_path_buf(),
            width,
            rows: shape[0],
            sample_shape: shape[1..].to_vec(),
        })
    }

    /// Fails unless one row has shape `expected` (the model's sample shape).
    pub fn check_sample_shape(&self, expected: &[usize]) -> Result<()> {
        if self.sample_shape != expected {
            return Err(Error::data(
                &self.path,
                format!(
                    "samples have shape {:?} but the model takes {expected:?} (model space, model layout)",
                    self.sample_shape
                ),
            ));
        }
        Ok(())
    }

    /// Reads rows `start..start+n` into `out`.
    pub fn read_rows(&self, start: usize, n: usize, out: &mut [f32]) -> Result<()> {
        let d: usize = self.sample_shape.iter().product();
        let out_rows = &mut out[..n * d];
        match self.width {
            4 => self.read_into::<f32>(start * d, out_rows, |v| v)?,
            _ => self.read_into::<f64>(start * d, out_rows, |v| v as f32)?,
        }
        if let Some(i) = out[..n * d].iter().position(|v| !v.is_finite()) {
            return Err(Error::data(
                &self.path,
                format!(
                    "sample #{} holds a non-finite value ({}); inputs must be finite",
                    start + i / d,
                    out[i]
                ),
            ));
        }
        Ok(())
    }

    /// Reads `out.len()` elements of type `T` from element `first` on, converted by `cast`.
    fn read_into<T: npyz::Deserialize>(
        &self,
        first: usize,
        out: &mut [f32],
        cast: impl Fn(T) -> f32,
    ) -> Result<()> {
        let mut reader = open(&self.path)?
            .data::<T>()
            .map_err(|e| Error::data(&self.path, e.to_string()))?;
        reader
            .seek_to(first as u64)
            .map_err(|e| Error::io(&self.path, e))?;
        for (o, v) in out.iter_mut().zip(reader) {
            *o = cast(v.map_err(|e| Error::io(&self.path, e))?);
        }
        Ok(())
    }
}

/// A uint8 `.npy` array of 8-bit images, `(N, H, W)` gray or `(N, H, W, C)` with one or three
/// channels (RGB), as CIFAR-10-C and most NumPy copies of image data sets store them: read as
/// images (pixels / 255), not as model-space tensors.
#[derive(Debug, Clone)]
pub(crate) struct PixelArray {
    path: PathBuf,
    /// Number of images.
    pub rows: usize,
    /// `(H, W, C)` of one image.
    pub shape: (usize, usize, usize),
}

/// The element type of the `.npy` file at `path`, as NumPy writes it (`<f4`, `|u1`, ...).
pub(crate) fn element_type(path: &Path) -> Result<String> {
    Ok(type_str(&open(path)?.dtype()))
}

impl PixelArray {
    /// Opens `path` and checks dtype, order, shape and file length.
    pub fn open(path: &Path) -> Result<Self> {
        let npy = open(path)?;
        if type_str(&npy.dtype()) != "|u1" || npy.order() != Order::C {
            return Err(Error::data(path, "not a C-ordered uint8 array"));
        }
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        let (h, w, c) = match shape[..] {
            [_, h, w] => (h, w, 1),
            [_, h, w, c] if c == 1 || c == 3 => (h, w, c),
            _ => {
                return Err(Error::data(
                    path,
                    format!(
                        "uint8 shape {shape:?}: expected images (N, H, W) or (N, H, W, C) with C = 1 or 3"
                    ),
                ))
            }
        };
        if h == 0 || w == 0 {
            return Err(Error::data(
                path,
                format!("shape {shape:?}: images of no pixels"),
            ));
        }
        let mut reader = npy.into_inner();
        let data_start = reader.stream_position().map_err(|e| Error::io(path, e))?;
        promised(path, &shape, 1, file_len(path)?.saturating_sub(data_start))?;
        Ok(PixelArray {
            path: path.to_path_buf(),
            rows: shape[0],
            shape: (h, w, c),
        })
    }

    /// Images `start..start+n`, gray or RGB.
    pub fn images(&self, start: usize, n: usize) -> Result<Vec<image::DynamicImage>> {
        let (h, w, c) = self.shape;
        let per = h * w * c;
        let mut reader = open(&self.path)?
            .data::<u8>()
            .map_err(|e| Error::data(&self.path, e.to_string()))?;
        reader
            .seek_to((start * per) as u64)
            .map_err(|e| Error::io(&self.path, e))?;
        let bytes = reader
            .take(n * per)
            .collect::<std::io::Result<Vec<u8>>>()
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(bytes
            .chunks_exact(per)
            .map(|px| {
                let (w, h) = (w as u32, h as u32);
                if c == 1 {
                    image::GrayImage::from_raw(w, h, px.to_vec()).map(Into::into)
                } else {
                    image::RgbImage::from_raw(w, h, px.to_vec()).map(Into::into)
                }
                .expect("sizes checked")
            })
            .collect())
    }
}

/// Reads a whole float32 or float64 `.npy` file (C order): its shape and its values as float32.
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let f = open(path)?;
    if f.order() != Order::C {
        return Err(Error::data(path, "Fortran-order arrays are not supported"));
    }
    let shape: Vec<usize> = f.shape().iter().map(|&d| d as usize).collect();
    let dtype = f.dtype();
    let wide = matches!(&dtype, DType::Plain(t) if t.size_field() == 8);
    promised(path, &shape, if wide { 8 } else { 4 }, file_len(path)?)?;
    let values = match wide {
        true => f
            .into_vec::<f64>()
            .map(|v| v.into_iter().map(|x| x as f32).collect()),
        false => f.into_vec::<f32>(),
    }
    .map_err(|e| {
        Error::data(
            path,
            format!(
                "expected float32 or float64 values, found {}: {e}",
                type_str(&dtype)
            ),
        )
    })?;
    Ok((shape, values))
}

/// Writes `values` as a float32 `.npy` file of `shape` (C order).
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    use npyz::WriterBuilder;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let file = crate::write::create(path)?;
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .map_err(|e| Error::io(path, e))?;
    w.extend(values.iter().copied())
        .map_err(|e| Error::io(path, e))?;
    w.finish().map_err(|e| Error::io(path, e))
}

/// Reads a 1-D integer label vector of length `rows`.
pub(crate) fn read_labels(path: &Path, rows: usize) -> Result<Vec<usize>> {
    let npy = open(path)?;
    let shape = npy.shape().to_vec();
    if shape.len() != 1 {
        return Err(Error::data(
            path,
            format!("labels must be 1-D, got shape {shape:?}"),
        ));
    }
    let dtype = type_str(&npy.dtype());
    let width = match dtype.as_str() {
        "<i8" => 8,
        "<i4" => 4,
        _ => 1,
    };
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    promised(path, &shape, width, file_len(path)?)?;
    let raw: Vec<i64> = match dtype.as_str() {
        "<i8" => npy.into_vec::<i64>(),
        "<i4" => npy
            .into_vec::<i32>()
            .map(|v| v.into_iter().map(i64::from).collect()),
        "|u1" => npy
            .into_vec::<u8>()
            .map(|v| v.into_iter().map(i64::from).collect()),
        "|i1" => npy
            .into_vec::<i8>()
            .map(|v| v.into_iter().map(i64::from).collect()),
        other => {
            return Err(Error::data(
                path,
                format!(
                "labels have element type {other}; expected integers (int64, int32, int8, uint8)"
            ),
            ))
        }
    }
    .map_err(|e| Error::data(path, format!("cannot read labels: {e}")))?;
    if raw.len() != rows {
        return Err(Error::data(
            path,
            format!(
                "{} labels for {rows} samples; the counts must match",
                raw.len()
            ),
        ));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, l)| {
            usize::try_from(l)
                .map_err(|_| Error::data(path, format!("label #{i} is negative ({l})")))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use npyz::WriterBuilder;

    /// Writes `data` of `shape` to `path` with the default dtype of `T`, or with `dtype`.
    pub(crate) fn write<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
        path: &Path,
        dtype: Option<&str>,
        shape: &[u64],
        data: &[T],
    ) {
        let options = npyz::WriteOptions::new();
        let options = match dtype {
            Some(d) => options.dtype(npyz::DType::Plain(d.parse().unwrap())),
            None => options.default_dtype(),
        };
        let mut w = options
            .shape(shape)
            .writer(std::fs::File::create(path).unwrap())
            .begin_nd()
            .unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
    }

    fn write_f32(path: &Path, shape: &[u64], data: &[f32]) {
        write(path, None, shape, data);
    }

    #[test]
    fn reads_row_ranges() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        let data: Vec<f32> = (0..24).map(|v| v as f32).collect();
        write_f32(&p, &[3, 2, 2, 2], &data);
        let t = NpyTensor::open(&p).unwrap();
        assert_eq!((t.rows, t.sample_shape.clone()), (3, vec![2, 2, 2]));
        let mut out = vec![0.0; 16];
        t.read_rows(1, 2, &mut out).unwrap();
        assert_eq!(out, data[8..].to_vec());
        assert!(t.check_sample_shape(&[2, 2, 3]).is_err());
    }

    #[test]
    fn float64_and_big_endian_rows_read_as_float32() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        let data: Vec<f64> = (0..8).map(|v| 0.1 * v as f64).collect();
        write(&p, None, &[2, 1, 2, 2], &data);
        let t = NpyTensor::open(&p).unwrap();
        let mut out = vec![0.0; 4];
        t.read_rows(1, 1, &mut out).unwrap();
        let want: Vec<f32> = data[4..].iter().map(|&v| v as f32).collect();
        assert_eq!(out, want);
        // Eight bytes per element: one missing byte is a truncated file.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let e = NpyTensor::open(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");

        write(&p, Some(">f4"), &[1, 1, 1, 2], &[1.5f32, -2.25]);
        let mut out = vec![0.0; 2];
        NpyTensor::open(&p)
            .unwrap()
            .read_rows(0, 1, &mut out)
            .unwrap();
        assert_eq!(out, vec![1.5, -2.25]);
    }

    #[test]
    fn wrong_dtype_rank_and_truncation_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        write(&p, None, &[2, 1, 1, 1], &[1i64, 2]);
        let e = NpyTensor::open(&p).unwrap_err().to_string();
        assert!(e.contains("<i8") && e.contains("float32 or float64"), "{e}");

        write_f32(&p, &[4, 3], &[0.0; 12]);
        let e = NpyTensor::open(&p).unwrap_err().to_string();
        assert!(e.contains("rank 2"), "{e}");

        write_f32(&p, &[4, 1, 2, 2], &[0.0; 16]);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
        let e = NpyTensor::open(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn labels_must_match_the_row_count() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("y.npy");
        write(&p, None, &[3], &[1i64, 0, 4]);
        assert_eq!(read_labels(&p, 3).unwrap(), vec![1, 0, 4]);
        let e = read_labels(&p, 5).unwrap_err().to_string();
        assert!(e.contains("3 labels for 5 samples"), "{e}");
    }
}

//! `.npy` tensors already in model space (float32, C order, first axis =
//! samples), read row range by row range; and integer label vectors.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};

use npyz::{DType, NpyFile, Order};

use crate::error::{Error, Result};

/// A float32 `.npy` file whose rows are samples.
#[derive(Debug, Clone)]
pub(crate) struct NpyTensor {
    path: PathBuf,
    /// Number of samples.
    pub rows: usize,
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
}

fn open(path: &Path) -> Result<NpyFile<BufReader<File>>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
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
        let dtype = type_str(&npy.dtype());
        if dtype != "<f4" {
            return Err(Error::data(
                path,
                format!(
                    "element type is {dtype}; georob reads little-endian float32 (<f4) tensors"
                ),
            ));
        }
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
        let total: usize = shape.iter().product();
        let mut reader = npy.into_inner();
        let data_start = reader.stream_position().map_err(|e| Error::io(path, e))?;
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len < data_start + 4 * total as u64 {
            return Err(Error::data(
                path,
                format!(
                    "truncated: the header promises {total} values ({} bytes) but the file holds {} bytes of data",
                    4 * total,
                    len.saturating_sub(data_start)
                ),
            ));
        }
        Ok(NpyTensor {
            path: path.to_path_buf(),
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
        let mut reader = open(&self.path)?
            .data::<f32>()
            .map_err(|e| Error::data(&self.path, e.to_string()))?;
        reader
            .seek_to((start * d) as u64)
            .map_err(|e| Error::io(&self.path, e))?;
        for (o, v) in out[..n * d].iter_mut().zip(reader) {
            *o = v.map_err(|e| Error::io(&self.path, e))?;
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
mod tests {
    use super::*;
    use npyz::WriterBuilder;

    fn write_f32(path: &Path, shape: &[u64], data: &[f32]) {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .writer(std::fs::File::create(path).unwrap())
            .begin_nd()
            .unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
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
    fn wrong_dtype_rank_and_truncation_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[2, 1, 1, 1])
            .writer(std::fs::File::create(&p).unwrap())
            .begin_nd()
            .unwrap();
        w.extend([1.0f64, 2.0]).unwrap();
        w.finish().unwrap();
        let e = NpyTensor::open(&p).unwrap_err().to_string();
        assert!(e.contains("<f8"), "{e}");

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
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[3])
            .writer(std::fs::File::create(&p).unwrap())
            .begin_nd()
            .unwrap();
        w.extend([1i64, 0, 4]).unwrap();
        w.finish().unwrap();
        assert_eq!(read_labels(&p, 3).unwrap(), vec![1, 0, 4]);
        let e = read_labels(&p, 5).unwrap_err().to_string();
        assert!(e.contains("3 labels for 5 samples"), "{e}");
    }
}

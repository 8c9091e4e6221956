//! Data sets: an ImageFolder directory, a CSV manifest, a single image,
//! `.npy` tensors already in model space, or a uint8 `.npy` array of images. Items are listed up front (paths
//! and labels only); pixels are decoded batch by batch, so memory stays flat
//! however large the data set.
//!
//! Labels of an ImageFolder: a `labels.txt` in the folder (one sub-folder
//! name per line; line `i` is class `i`), else the integer folder names, else
//! the sorted order of the folder names.

mod image;
mod npy;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

pub use self::image::{decode, image_space, read_image_space};
pub use self::npy::{read_f32, write_f32};
use crate::error::{Error, Result};
use crate::preprocess::to_model_space;
use crate::spec::InputSpec;

/// File extensions read as images.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// What kind of data set was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// One sub-folder per class.
    ImageFolder,
    /// A folder of images without class sub-folders (unlabelled).
    ImageList,
    /// A CSV file of `path,label` rows.
    Manifest,
    /// One image file.
    SingleImage,
    /// A float32 `.npy` tensor in model space.
    Npy,
    /// A uint8 `.npy` array of images, `(N, H, W[, C])` (CIFAR-10-C's files).
    PixelArray,
}

/// Where the labels come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSource {
    /// Given with the data (folder names, manifest column, labels file).
    Given(String),
    /// None given: the model's predictions on the clean inputs serve as labels.
    Predicted,
}

/// One element of a data set.
#[derive(Debug, Clone)]
pub struct Item {
    /// Display name (path relative to the data set, or `#row` for .npy).
    pub name: String,
    /// Image file, or None for a `.npy` row.
    pub path: Option<PathBuf>,
    /// Ground-truth class, when known.
    pub label: Option<usize>,
}

/// A listed data set.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// What was opened.
    pub path: PathBuf,
    /// Kind of data set.
    pub kind: DataKind,
    /// The items, in a fixed order.
    pub items: Vec<Item>,
    /// Where labels come from.
    pub labels: LabelSource,
    npy: Option<npy::NpyTensor>,
    pixels: Option<npy::PixelArray>,
    /// Position of `items[0]` in the data set as opened: not 0 for a [`Dataset::chunk`].
    first: usize,
}

/// A batch of consecutive items in model space.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Index of the first item.
    pub start: usize,
    /// Number of items.
    pub len: usize,
    /// Model-space inputs, `len × sample_len`, in the model's layout.
    pub x: Vec<f32>,
}

impl Dataset {
    /// Opens `path`: a folder, a `.csv` manifest, a `.npy` tensor or one image.
    /// `labels` is a `.npy` of integer labels for `.npy` data.
    pub fn open(path: &Path, labels: Option<&Path>) -> Result<Dataset> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let ext = extension(path);
        if labels.is_some() && ext != "npy" {
            return Err(Error::Config(
                "--labels applies to .npy data only; folders and manifests carry their labels"
                    .into(),
            ));
        }
        let ds = if meta.is_dir() {
            open_folder(path)?
        } else if ext == "npy" {
            let (tensor, pixels, rows) = if npy::element_type(path)? == "|u1" {
                let p = npy::PixelArray::open(path)?;
                (None, Some(p.clone()), p.rows)
            } else {
                let t = npy::NpyTensor::open(path)?;
                (Some(t.clone()), None, t.rows)
            };
            let given = labels.map(|l| npy::read_labels(l, rows)).transpose()?;
            let items = (0..rows)
                .map(|i| Item {
                    name: format!("#{i}"),
                    path: None,
                    label: given.as_ref().map(|g| g[i]),
                })
                .collect();
            Dataset {
                path: path.to_path_buf(),
                kind: if pixels.is_some() {
                    DataKind::PixelArray
                } else {
                    DataKind::Npy
                },
                items,
                labels: match labels {
                    Some(l) => LabelSource::Given(l.display().to_string()),
                    None => LabelSource::Predicted,
                },
                npy: tensor,
                pixels,
                first: 0,
            }
        } else if ext == "csv" {
            open_manifest(path)?
        } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            Dataset {
                path: path.to_path_buf(),
                kind: DataKind::SingleImage,
                items: vec![Item {
                    name: path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    path: Some(path.to_path_buf()),
                    label: None,
                }],
                labels: LabelSource::Predicted,
                npy: None,
                pixels: None,
                first: 0,
            }
        } else {
            return Err(Error::data(
                path,
                "not a folder, .csv manifest, .npy tensor or PNG/JPEG image",
            ));
        };
        if ds.items.is_empty() {
            return Err(Error::data(path, "the data set holds no images"));
        }
        Ok(ds)
    }

    /// Items `range` as a data set of their own (a chunk of an audit's images): item `i` of
    /// the chunk is item `range.start + i` of `self`, and [`Dataset::position`] says so.
    pub fn chunk(&self, range: std::ops::Range<usize>) -> Dataset {
        Dataset {
            path: self.path.clone(),
            kind: self.kind,
            items: self.items[range.clone()].to_vec(),
            labels: self.labels.clone(),
            npy: self.npy.clone(),
            pixels: self.pixels.clone(),
            first: self.first + range.start,
        }
    }

    /// Position of item `i` in the data set as opened (`i` itself unless this is a chunk):
    /// what per-image seeds and result rows are keyed by.
    pub fn position(&self, i: usize) -> usize {
        self.first + i
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items (never true for an opened data set).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the data are images read through preprocessing (image space
    /// `[0,1]`), as opposed to `.npy` tensors already in model space.
    pub fn is_image_space(&self) -> bool {
        self.npy.is_none()
    }

    /// The box perturbations are clipped to when none is given: `[0, 1]` for images read
    /// from files, none for `.npy` tensors (model space, whose range georob cannot know).
    pub fn default_bounds(&self) -> Option<(f32, f32)> {
        self.is_image_space().then_some((0.0, 1.0))
    }

    /// Loads items `start..start+len` in model space for `spec`, decoding
    /// images in parallel.
    pub fn load(&self, spec: &InputSpec, start: usize, len: usize) -> Result<Batch> {
        let d = spec.sample_len();
        let mut x = vec![0.0f32; len * d];
        if let Some(t) = &self.npy {
            t.check_sample_shape(&spec.sample_shape())?;
            t.read_rows(self.first + start, len, &mut x)?;
        } else if self.pixels.is_some() {
            let u = self.load_image_space(spec, start, len)?;
            for (out, u) in x.chunks_exact_mut(d).zip(u.chunks_exact(d)) {
                to_model_space(spec, u, out);
            }
        } else {
            x.par_chunks_mut(d)
                .zip(&self.items[start..start + len])
                .try_for_each(|(out, item)| -> Result<()> {
                    let path = item.path.as_ref().expect("image item");
                    let mut image = vec![0.0f32; d];
                    read_image_space(path, spec, &mut image)?;
                    to_model_space(spec, &image, out);
                    Ok(())
                })?;
        }
        Ok(Batch { start, len, x })
    }

    /// Loads items `start..start+len` in image space: planar `(C, H, W)`
    /// values in `[0, 1]` at the model's size. Fails for `.npy` data, which
    /// are already in model space.
    pub fn load_image_space(&self, spec: &InputSpec, start: usize, len: usize) -> Result<Vec<f32>> {
        if self.npy.is_some() {
            return Err(Error::Config(format!(
                "{}: .npy data are model-space tensors, not images",
                self.path.display()
            )));
        }
        let d = spec.sample_len();
        let mut u = vec![0.0f32; len * d];
        if let Some(p) = &self.pixels {
            let images = p.images(self.first + start, len)?;
            u.par_chunks_mut(d)
                .zip(images)
                .for_each(|(out, img)| image_space(img, spec, out));
            return Ok(u);
        }
        u.par_chunks_mut(d)
            .zip(&self.items[start..start + len])
            .try_for_each(|(out, item)| {
                read_image_space(item.path.as_ref().expect("image item"), spec, out)
            })?;
        Ok(u)
    }

    /// Iterates over consecutive batches of at most `batch` items.
    pub fn batches<'a>(
        &'a self,
        spec: &'a InputSpec,
        batch: usize,
    ) -> impl Iterator<Item = Result<Batch>> + 'a {
        let n = self.len();
        (0..n)
            .step_by(batch.max(1))
            .map(move |s| self.load(spec, s, batch.max(1).min(n - s)))
    }

    /// Checks every given label against the class count `k`.
    pub fn check_labels(&self, k: usize) -> Result<()> {
        for item in &self.items {
            if let Some(l) = item.label {
                if l >= k {
                    let from = match &self.labels {
                        LabelSource::Given(how) => format!(" (labels from {how})"),
                        LabelSource::Predicted => String::new(),
                    };
                    return Err(Error::data(
                        &self.path,
                        format!(
                            "label {l} of {}{from} is out of range: the model has {k} classes \
                             (0..{})",
                            item.name,
                            k - 1
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether a folder entry is an image to read: a regular file with an image extension. An
/// entry with such a name that is a FIFO, a device or a dangling link is an error, not
/// skipped.
fn is_image(path: &Path) -> Result<bool> {
    if !IMAGE_EXTENSIONS.contains(&extension(path).as_str()) {
        return Ok(false);
    }
    crate::read::is_regular_entry(path)
}

/// The images among `entries`, in order.
fn images(entries: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in entries {
        if is_image(&p)? {
            out.push(p);
        }
    }
    Ok(out)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .map(|n| n.to_string_lossy().starts_with('.'))
                .unwrap_or(true)
        })
        .collect();
    v.sort();
    Ok(v)
}

fn open_folder(dir: &Path) -> Result<Dataset> {
    let entries = sorted_entries(dir)?;
    let classes: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        let items = images(entries.clone())?
            .into_iter()
            .map(|p| Item {
                name: p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                path: Some(p.clone()),
                label: None,
            })
            .collect();
        return Ok(Dataset {
            path: dir.to_path_buf(),
            kind: DataKind::ImageList,
            items,
            labels: LabelSource::Predicted,
            npy: None,
            pixels: None,
            first: 0,
        });
    }
    let names: Vec<String> = classes
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let labels_txt = dir.join("labels.txt");
    let (indices, how): (Vec<usize>, String) = if labels_txt.is_file() {
        let text = crate::read::text(&labels_txt, crate::read::TEXT_CAP)?;
        let listed: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let idx = names
            .iter()
            .map(|n| {
                listed
                    .iter()
                    .position(|l| l == n)
                    .ok_or_else(|| Error::data(&labels_txt, format!("folder {n:?} is not listed")))
            })
            .collect::<Result<_>>()?;
        (idx, "labels.txt".into())
    } else if let Ok(idx) = names
        .iter()
        .map(|n| n.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
    {
        (idx, "integer folder names".into())
    } else {
        ((0..names.len()).collect(), "sorted folder names".into())
    };
    let mut items = Vec::new();
    for (class_dir, &label) in classes.iter().zip(&indices) {
        for p in images(sorted_entries(class_dir)?)? {
            let name = p
                .strip_prefix(dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            items.push(Item {
                name,
                path: Some(p),
                label: Some(label),
            });
        }
    }
    Ok(Dataset {
        path: dir.to_path_buf(),
        kind: DataKind::ImageFolder,
        items,
        labels: LabelSource::Given(how),
        npy: None,
        pixels: None,
        first: 0,
    })
}

fn open_manifest(path: &Path) -> Result<Dataset> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(crate::read::open(path, crate::read::TEXT_CAP)?);
    let mut items = Vec::new();
    let mut any_label = false;
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| Error::data(path, format!("row {}: {e}", row + 1)))?;
        let file = record.get(0).unwrap_or("").to_string();
        let label_text = record.get(1).unwrap_or("").to_string();
        if row == 0 && (file == "path" || label_text == "label") {
            continue; // header
        }
        if file.is_empty() {
            continue;
        }
        let label = if label_text.is_empty() {
            None
        } else {
            Some(label_text.parse::<usize>().map_err(|_| {
                Error::data(
                    path,
                    format!(
                        "row {}: label {label_text:?} is not a non-negative integer",
                        row + 1
                    ),
                )
            })?)
        };
        any_label |= label.is_some();
        let p = base.join(&file);
        items.push(Item {
            name: file,
            path: Some(p),
            label,
        });
    }
    if any_label && items.iter().any(|i| i.label.is_none()) {
        return Err(Error::data(path, "some rows have a label and some do not"));
    }
    for item in &items {
        let p = item.path.as_ref().expect("manifest items have paths");
        if !p.is_file() {
            return Err(Error::data(
                path,
                format!("{}: no such image file", p.display()),
            ));
        }
    }
    Ok(Dataset {
        path: path.to_path_buf(),
        kind: DataKind::Manifest,
        items,
        labels: if any_label {
            LabelSource::Given("manifest".into())
        } else {
            LabelSource::Predicted
        },
        npy: None,
        pixels: None,
        first: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        ::image::GrayImage::new(4, 4).save(path).unwrap();
    }

    #[test]
    fn image_folder_labels_follow_the_documented_rules() {
        let d = tempfile::tempdir().unwrap();
        png(&d.path().join("cat/a.png"));
        png(&d.path().join("dog/b.png"));
        png(&d.path().join("dog/c.png"));
        let ds = Dataset::open(d.path(), None).unwrap();
        assert_eq!(ds.kind, DataKind::ImageFolder);
        let labels: Vec<_> = ds.items.iter().map(|i| i.label).collect();
        assert_eq!(labels, [Some(0), Some(1), Some(1)]);

        std::fs::write(d.path().join("labels.txt"), "bird\ndog\ncat\n").unwrap();
        let ds = Dataset::open(d.path(), None).unwrap();
        let labels: Vec<_> = ds.items.iter().map(|i| i.label).collect();
        assert_eq!(labels, [Some(2), Some(1), Some(1)]);

        let e = tempfile::tempdir().unwrap();
        png(&e.path().join("7/a.png"));
        png(&e.path().join("12/b.png"));
        let ds = Dataset::open(e.path(), None).unwrap();
        let mut labels: Vec<_> = ds.items.iter().map(|i| i.label.unwrap()).collect();
        labels.sort();
        assert_eq!(labels, [7, 12]);
    }

    #[test]
    fn manifest_reads_paths_relative_to_itself() {
        let d = tempfile::tempdir().unwrap();
        png(&d.path().join("x/a.png"));
        png(&d.path().join("b.png"));
        let m = d.path().join("m.csv");
        std::fs::write(&m, "path,label\nx/a.png,3\nb.png,1\n").unwrap();
        let ds = Dataset::open(&m, None).unwrap();
        assert_eq!(ds.kind, DataKind::Manifest);
        assert_eq!(ds.items[0].label, Some(3));
        std::fs::write(&m, "x/a.png,3\nmissing.png,1\n").unwrap();
        let e = Dataset::open(&m, None).unwrap_err().to_string();
        assert!(e.contains("missing.png"), "{e}");
        std::fs::write(&m, "x/a.png,cat\n").unwrap();
        let e = Dataset::open(&m, None).unwrap_err().to_string();
        assert!(e.contains("\"cat\""), "{e}");
    }

    #[test]
    fn empty_and_missing_data_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = Dataset::open(d.path(), None).unwrap_err().to_string();
        assert!(e.contains("no images"), "{e}");
        let e = Dataset::open(&d.path().join("nope"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    fn write_u8(path: &Path, shape: &[u64], data: &[u8]) {
        npy::tests::write(path, None, shape, data);
    }

    /// A uint8 `(N, H, W, 3)` array is read as images: pixel / 255, planar, RGB or BGR as the
    /// model takes them; other channel counts are refused.
    #[test]
    fn uint8_arrays_are_images() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        let data: Vec<u8> = (0..2 * 2 * 3 * 3).map(|v| v as u8 * 7).collect();
        write_u8(&p, &[2, 2, 3, 3], &data);
        let ds = Dataset::open(&p, None).unwrap();
        assert_eq!((ds.kind, ds.len()), (DataKind::PixelArray, 2));
        assert!(ds.is_image_space());
        let s = crate::testutil::spec(crate::spec::Layout::Nchw, crate::spec::Channels::Rgb, 2, 3);
        let u = ds.chunk(1..2).load_image_space(&s, 0, 1).unwrap();
        // Image 1, pixel (y, x), channel c is byte 18 + 3 (3y + x) + c.
        for (c, y, x) in [(0, 0, 0), (1, 1, 2), (2, 0, 1)] {
            let byte = data[18 + 3 * (3 * y + x) + c];
            assert_eq!(u[c * 6 + 3 * y + x], f32::from(byte) / 255.0);
        }
        let m = ds.load(&s, 1, 1).unwrap().x;
        assert_eq!(
            m[0],
            (u[0] - 0.5) / 0.25,
            "model space after the mean and std"
        );
        write_u8(&p, &[1, 2, 2, 2], &[0; 8]);
        let e = Dataset::open(&p, None).unwrap_err().to_string();
        assert!(e.contains("C = 1 or 3"), "{e}");
    }

    #[test]
    fn out_of_range_labels_are_reported() {
        let d = tempfile::tempdir().unwrap();
        png(&d.path().join("12/a.png"));
        let ds = Dataset::open(d.path(), None).unwrap();
        let e = ds.check_labels(10).unwrap_err().to_string();
        assert!(e.contains("label 12") && e.contains("10 classes"), "{e}");
    }
}

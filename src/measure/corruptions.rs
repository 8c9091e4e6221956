//! `corruptions`: accuracy under the ImageNet-C corruptions (Hendrycks & Dietterich, ICLR
//! 2019; [`crate::corrupt`]) per corruption and severity, and the corruption errors CE and
//! mCE. Each image is corrupted at the model's input size (as ImageNet-C corrupts the
//! 224×224 crops), 8-bit in and out, with its own seed. `.npy` tensors are corrupted as
//! images when the model's preprocessing is the identity (NCHW, scale 1, mean 0, std 1), so
//! that their values are pixels.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use image::RgbImage;
use serde_json::json;

use super::space::SpacedModel;
use super::{Better, 
    picture, Artifact, Context, Declaration, ImageResult, Measure, MeasureResult, Outcome, Output,
    Summary, Units, Values,
};
use crate::attack::vector::argmax;
use crate::corrupt::{Corruption, RgbPlanes, Severity};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::spec::InputSpec;

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Corruption names (`georob corrupt --list`).
    pub corruptions: Vec<String>,
    /// Severities, 1 to 5.
    pub severities: Vec<u8>,
    /// A published corruption set to read instead of corrupting: a folder holding
    /// `CORRUPTION/SEVERITY/` image folders (ImageNet-C) or `CORRUPTION.npy` with `labels.npy`
    /// (CIFAR-10-C), in the order of the clean data.
    pub set: Option<PathBuf>,
}

impl Default for Params {
    /// The 15 corruptions of ImageNet-C (not the 4 extras) at every severity.
    fn default() -> Self {
        Params {
            corruptions: Corruption::ALL
                .iter()
                .filter(|c| c.family() != "extra")
                .map(|c| c.name().to_string())
                .collect(),
            severities: Severity::all().map(Severity::level).collect(),
            set: None,
        }
    }
}

impl Params {
    fn grid(&self) -> Result<Vec<(Corruption, Severity)>> {
        let corruptions = self
            .corruptions
            .iter()
            .map(|n| n.parse::<Corruption>())
            .collect::<Result<Vec<_>>>()?;
        let severities = self
            .severities
            .iter()
            .map(|&s| Severity::new(s))
            .collect::<Result<Vec<_>>>()?;
        if corruptions.is_empty() || severities.is_empty() {
            return Err(Error::Config(
                "corruptions: `corruptions` and `severities` must not be empty".into(),
            ));
        }
        Ok(corruptions
            .iter()
            .flat_map(|&c| severities.iter().map(move |&s| (c, s)))
            .collect())
    }
}

impl Params {
    /// Saves the first image clean and in every cell of the grid, one row per corruption
    /// (clean first, then the severities), as `corruptions.png` in `dir`.
    fn examples(
        &self,
        dir: &Path,
        examples: &[Vec<f32>],
        spec: &InputSpec,
        name: &str,
    ) -> Result<Artifact> {
        let shape = (spec.channels.count(), spec.height, spec.width);
        let tiles: Vec<RgbImage> = examples
            .iter()
            .filter_map(|u| picture::to_rgb(u, shape, |v| v))
            .collect();
        let per_row = self.severities.len();
        let rows: Vec<Vec<RgbImage>> = tiles[1..]
            .chunks(per_row)
            .map(|row| std::iter::once(tiles[0].clone()).chain(row.iter().cloned()).collect())
            .collect();
        picture::save(&picture::grid(&rows, 64), &dir.join("corruptions.png"))?;
        Ok(Artifact {
            description: format!(
                "{name}: clean, then severities {:?}; one row per corruption: {}",
                self.severities,
                self.corruptions.join(", ")
            ),
            path: "corruptions.png".into(),
        })
    }
}

/// Line charts of accuracy against severity, one per family of corruptions (noise, blur,
/// weather, digital, extra), each line starting at the clean accuracy at severity 0: for the
/// HTML report (`extra.charts`).
fn charts(grid: &[(Corruption, Severity)], summary: &BTreeMap<String, f64>) -> serde_json::Value {
    let clean = 1.0 - summary["clean_error"];
    let mut families: Vec<(&str, Vec<serde_json::Value>)> = vec![];
    let mut corruptions: Vec<Corruption> = grid.iter().map(|&(c, _)| c).collect();
    corruptions.dedup();
    for c in corruptions {
        let points: Vec<serde_json::Value> = std::iter::once(json!([0, clean]))
            .chain(grid.iter().filter(|&&(g, _)| g == c).map(|(_, s)| {
                json!([s.level(), summary[&format!("accuracy_{c}_{s}")]])
            }))
            .collect();
        let line = json!({ "name": c.name(), "points": points });
        match families.iter_mut().find(|(f, _)| *f == c.family()) {
            Some((_, lines)) => lines.push(line),
            None => families.push((c.family(), vec![line])),
        }
    }
    families
        .into_iter()
        .map(|(f, lines)| {
            json!({ "title": format!("accuracy against severity: {f}"), "x": "severity", "series": lines })
        })
        .collect()
}

/// A published corruption set ([`Params::set`]), opened through the context's resources:
/// per cell of the grid, the data set holding it and the row of the clean data's first image.
struct CorruptionSet {
    sets: Vec<Dataset>,
    cells: Vec<(usize, usize)>,
}

impl CorruptionSet {
    /// Finds every cell of `grid` under `dir`: `dir/c.npy` (severities stacked in blocks of
    /// a fifth of its rows, labels in `dir/labels.npy`), else the folder `dir/c/s`.
    fn open(dir: &Path, grid: &[(Corruption, Severity)], ctx: &Context) -> Result<Self> {
        let mut sets: Vec<Dataset> = vec![];
        let mut opened: BTreeMap<PathBuf, usize> = BTreeMap::new();
        let mut cells = vec![];
        for &(c, s) in grid {
            let npy = dir.join(format!("{c}.npy"));
            let (path, labels) = if npy.is_file() {
                (npy, Some(dir.join("labels.npy")))
            } else {
                (dir.join(c.name()).join(s.to_string()), None)
            };
            let index = match opened.get(&path) {
                Some(&i) => i,
                None => {
                    let labels = labels.as_deref().filter(|l| l.is_file());
                    sets.push(ctx.resources.dataset(&path, labels)?);
                    opened.insert(path.clone(), sets.len() - 1);
                    sets.len() - 1
                }
            };
            let set = &sets[index];
            let offset = if set.path.extension().is_some_and(|e| e == "npy") {
                if !set.len().is_multiple_of(5) {
                    return Err(Error::data(
                        &set.path,
                        format!(
                            "{} rows: a CIFAR-10-C file stacks the 5 severities in equal blocks",
                            set.len()
                        ),
                    ));
                }
                (usize::from(s.level()) - 1) * set.len() / 5
            } else {
                0
            };
            cells.push((index, offset));
        }
        Ok(CorruptionSet { sets, cells })
    }

    /// Logits of the corrupted versions of the images `start..start+len` of the context's
    /// data in `cell`, after checking that the set holds them in the same order.
    fn logits(&self, cell: usize, ctx: &Context, start: usize, len: usize) -> Result<Vec<f32>> {
        let (index, offset) = self.cells[cell];
        let set = &self.sets[index];
        let first = offset + ctx.data.position(start);
        let block = match set.path.extension().is_some_and(|e| e == "npy") {
            true => set.len() / 5,
            false => set.len(),
        };
        if ctx.data.position(start + len - 1) >= block {
            return Err(Error::data(
                &set.path,
                format!(
                    "holds {block} images per severity, fewer than the clean data's {}",
                    ctx.data.position(start + len - 1) + 1
                ),
            ));
        }
        for i in 0..len {
            let (clean, corrupted) = (&ctx.data.items[start + i], &set.items[first + i]);
            let stem = |n: &str| Path::new(n).with_extension("");
            let names_differ = clean.path.is_some()
                && corrupted.path.is_some()
                && stem(&clean.name) != stem(&corrupted.name);
            let labels_differ = matches!((clean.label, corrupted.label), (Some(a), Some(b)) if a != b);
            if names_differ || labels_differ {
                return Err(Error::data(
                    &set.path,
                    format!(
                        "item {} ({}, label {:?}) does not match clean image {} ({}, label {:?}): \
                         the set must hold the clean data's images in the same order",
                        first + i,
                        corrupted.name,
                        corrupted.label,
                        ctx.data.position(start + i),
                        clean.name,
                        clean.label
                    ),
                ));
            }
        }
        let x = set.load(&ctx.model.spec, first, len)?.x;
        ctx.model.logits(&x, len)
    }
}

/// The per-image value of corruption `c` at severity `s`.
fn key(c: Corruption, s: Severity) -> String {
    format!("correct_{c}_{s}")
}

impl Measure for Params {
    const DECLARATION: &'static Declaration = &Declaration {
        name: "corruptions",
        about: "accuracy under the ImageNet-C corruptions per corruption and severity; CE, mCE and relative mCE against the suite's baseline_model",
        params: &[
            ("corruptions", "corruption names [the 15 of ImageNet-C]"),
            ("severities", "severities, 1 to 5 [all]"),
            ("set", "a published corruption set to read instead of corrupting: CORRUPTION/SEVERITY/ image folders (ImageNet-C) or CORRUPTION.npy + labels.npy (CIFAR-10-C), in the clean data's order [none]"),
        ],
        headline: &["mce", "relative_mce", "mean_error", "clean_error"],
        better: &[("mce", Better::Lower), ("relative_mce", Better::Lower), ("mean_error", Better::Lower), ("clean_error", Better::Lower)],
        histograms: &["corrupted_errors"],
        values: &[&[
            (
                "correct_{corruption_severity}",
                "1 when the prediction on the image corrupted at the severity (e.g. `correct_fog_3`) equals the label (the clean prediction without labels), else 0",
            ),
            ("corrupted_errors", "how many of the corrupted versions are misclassified"),
        ]],
        units: Units::Chunks,
    };
    const GRADIENTS: bool = false;

    fn validate(&self) -> Result<()> {
        self.grid().map(|_| ())
    }

    fn run(&self, ctx: &Context) -> Result<Output> {
        let grid = self.grid()?;
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let spec = &ctx.model.spec;
        let set = match &self.set {
            Some(dir) => Some(CorruptionSet::open(dir, &grid, ctx)?),
            None => None,
        };
        if set.is_none() {
            sm.require_pixels(ctx.data, "corruptions")?;
        }
        let (d, k) = (sm.dim(), sm.classes());
        let n = ctx.data.len();
        let rows = ctx.model.executor().pass_rows().max(1);
        let bar = ctx.progress.bar((n * grid.len()) as u64, "corruptions");
        let mut images = Vec::with_capacity(n);
        let mut artifacts = vec![];
        for start in (0..n).step_by(rows) {
            let len = rows.min(n - start);
            let clean = sm.clean_pass(ctx.data, start, len)?;
            let pictures: Vec<RgbPlanes> = match set {
                Some(_) => vec![],
                None => clean
                    .u
                    .chunks_exact(d)
                    .map(|u| RgbPlanes::from_planar(u, spec.channels, spec.width, spec.height))
                    .collect(),
            };
            // The first image, clean and in every cell, for the picture of the first chunk.
            let picture = ctx.out_dir.is_some() && start == 0 && set.is_none();
            // The chunk in as many groups of images as the backend runs calls at once, each
            // group through every cell on its own (corrupt, then one model call) with no wait
            // for the others between cells; the logits per group, cell after cell.
            let groups = ctx.model.executor().concurrent_calls().min(len);
            let size = len.div_ceil(groups);
            let ranges: Vec<(usize, usize)> = (0..len)
                .step_by(size)
                .map(|g| (g, size.min(len - g)))
                .collect();
            let group_logits = ctx.model.executor().map_concurrent(ranges.len(), |g| {
                let (first, count) = ranges[g];
                let mut cells = Vec::with_capacity(grid.len());
                let mut examples = vec![];
                let mut u = vec![0.0f32; count * d];
                for (cell, &(c, s)) in grid.iter().enumerate() {
                    let logits = match &set {
                        Some(set) => set.logits(cell, ctx, start + first, count)?,
                        None => {
                            for (i, out) in u.chunks_exact_mut(d).enumerate() {
                                let seed = ctx.image_seed(start + first + i);
                                c.apply(&pictures[first + i], s, seed)
                                    .to_planar(spec.channels, out);
                            }
                            if picture && first == 0 {
                                examples.push(u[..d].to_vec());
                            }
                            sm.logits(&u, count)?
                        }
                    };
                    cells.push(logits);
                    bar.inc(count as u64);
                }
                Ok((cells, examples))
            })?;
            let mut examples: Vec<Vec<f32>> = vec![];
            if picture {
                examples.push(clean.u[..d].to_vec());
            }
            let mut values: Vec<Values> = vec![Values::default(); len];
            let mut wrong = vec![0usize; len];
            let mut flipped = vec![false; len];
            for (&(first, _), (cells, pictured)) in ranges.iter().zip(group_logits) {
                examples.extend(pictured);
                for (&(c, s), logits) in grid.iter().zip(&cells) {
                    for (j, row) in logits.chunks_exact(k).enumerate() {
                        let i = first + j;
                        let pred = argmax(row);
                        let reference = ctx.data.items[start + i].label.unwrap_or(clean.preds[i]);
                        values[i].insert(key(c, s), f64::from(u8::from(pred == reference)));
                        wrong[i] += usize::from(pred != reference);
                        flipped[i] |= pred != clean.preds[i];
                    }
                }
            }
            if let (Some(dir), false) = (ctx.out_dir, examples.is_empty()) {
                artifacts.push(self.examples(dir, &examples, spec, &ctx.data.items[0].name)?);
            }
            for (i, mut v) in values.into_iter().enumerate() {
                v.insert("corrupted_errors", wrong[i] as f64);
                let outcome = Outcome::of_budget(clean.correct[i], flipped[i]);
                let item = &ctx.data.items[start + i];
                images.push(ImageResult::new(start + i, item, clean.preds[i], outcome, v));
            }
        }
        bar.finish_and_clear();
        Ok(Output {
            images,
            artifacts,
            ..Output::default()
        })
    }

    /// Per corruption and severity the accuracy and error over every image; per corruption
    /// the mean error over the severities; their mean over the corruptions and its rise over
    /// the clean error.
    fn summarise(&self, images: &[ImageResult], _parts: Vec<Summary>) -> Result<Summary> {
        let grid = self.grid()?;
        let mut summary = BTreeMap::new();
        if images.is_empty() {
            return Ok(Summary::default());
        }
        let n = images.len() as f64;
        let misclassified = images
            .iter()
            .filter(|i| i.outcome == Outcome::Misclassified)
            .count();
        let clean_error = misclassified as f64 / n;
        summary.insert("clean_error".to_string(), clean_error);
        let mut per_corruption: BTreeMap<Corruption, Vec<f64>> = BTreeMap::new();
        for &(c, s) in &grid {
            let k = key(c, s);
            let correct = images
                .iter()
                .filter(|i| i.values.get(&k) == Some(&1.0))
                .count();
            let error = (images.len() - correct) as f64 / n;
            summary.insert(format!("accuracy_{c}_{s}"), correct as f64 / n);
            summary.insert(format!("error_{c}_{s}"), error);
            per_corruption.entry(c).or_default().push(error);
        }
        let means: Vec<f64> = per_corruption
            .iter()
            .map(|(c, errors)| {
                let m = mean(errors);
                summary.insert(format!("mean_error_{c}"), m);
                m
            })
            .collect();
        let mean_error = mean(&means);
        summary.insert("mean_error".into(), mean_error);
        summary.insert("mean_error_rise".into(), mean_error - clean_error);
        Ok(Summary {
            extra: json!({ "charts": charts(&grid, &summary) }),
            summary,
        })
    }

    /// CE and mCE normalised by the baseline's errors (Hendrycks & Dietterich's eq. 1 with the
    /// baseline in AlexNet's place), and their relative forms: per corruption `c`,
    /// `ce_{c}` = Σ_s E_{s,c} / Σ_s E^base_{s,c} and `relative_ce_{c}` = Σ_s (E_{s,c} −
    /// E_clean) / Σ_s (E^base_{s,c} − E^base_clean), each where its denominator is positive;
    /// `mce` and `relative_mce`, their means over the ImageNet-C corruptions (not the extras)
    /// where defined, with how many entered (`mce_corruptions`, `relative_mce_corruptions`).
    fn against(
        &self,
        own: &MeasureResult,
        baseline: &MeasureResult,
    ) -> Result<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        let (a, b) = (&own.summary, &baseline.summary);
        let (Some(clean), Some(base_clean)) = (a.get("clean_error"), b.get("clean_error")) else {
            return Ok(out);
        };
        let mut per_corruption: BTreeMap<Corruption, [(f64, f64); 2]> = BTreeMap::new();
        for (c, s) in self.grid()? {
            let k = format!("error_{c}_{s}");
            let (Some(e), Some(base)) = (a.get(&k), b.get(&k)) else {
                return Ok(BTreeMap::new());
            };
            let [plain, relative] = per_corruption.entry(c).or_default();
            *plain = (plain.0 + e, plain.1 + base);
            *relative = (relative.0 + e - clean, relative.1 + base - base_clean);
        }
        let mut means = [vec![], vec![]];
        for (c, sums) in per_corruption {
            for ((name, (num, den)), list) in ["ce", "relative_ce"].iter().zip(sums).zip(&mut means)
            {
                if den > 0.0 {
                    out.insert(format!("{name}_{c}"), num / den);
                    if c.family() != "extra" {
                        list.push(num / den);
                    }
                }
            }
        }
        for (name, list) in ["mce", "relative_mce"].iter().zip(means) {
            if !list.is_empty() {
                out.insert(name.to_string(), mean(&list));
            }
            out.insert(format!("{name}_corruptions"), list.len() as f64);
        }
        Ok(out)
    }
}

/// Mean of a non-empty list (NaN when empty).
fn mean(v: &[f64]) -> f64 {
    super::mean(v).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(summary: &[(&str, f64)]) -> MeasureResult {
        crate::measure::summary_only("corruptions", summary)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Worked by hand: fog has CE (.2 + .4) / (.1 + .3) = 1.5 and relative CE
    /// ((.2 − .1) + (.4 − .1)) / (.1 + .3) = 1; contrast, never wrong on the baseline, has no
    /// CE; speckle noise (an extra) has CE 1 / .5 = 2 and relative CE .8 / .5 = 1.6 but stays
    /// out of the means, which are fog's alone.
    #[test]
    fn errors_are_normalised_by_the_baseline_where_it_errs() {
        let m = Params {
            corruptions: vec!["fog".into(), "contrast".into(), "speckle_noise".into()],
            severities: vec![1, 2],
            set: None,
        };
        let own = result(&[
            ("clean_error", 0.1),
            ("error_fog_1", 0.2),
            ("error_fog_2", 0.4),
            ("error_contrast_1", 0.1),
            ("error_contrast_2", 0.1),
            ("error_speckle_noise_1", 0.5),
            ("error_speckle_noise_2", 0.5),
        ]);
        let base = result(&[
            ("clean_error", 0.0),
            ("error_fog_1", 0.1),
            ("error_fog_2", 0.3),
            ("error_contrast_1", 0.0),
            ("error_contrast_2", 0.0),
            ("error_speckle_noise_1", 0.25),
            ("error_speckle_noise_2", 0.25),
        ]);
        let k = Measure::against(&m, &own, &base).unwrap();
        let expected = [
            ("ce_fog", 1.5),
            ("relative_ce_fog", 1.0),
            ("ce_speckle_noise", 2.0),
            ("relative_ce_speckle_noise", 1.6),
            ("mce", 1.5),
            ("relative_mce", 1.0),
            ("mce_corruptions", 1.0),
            ("relative_mce_corruptions", 1.0),
        ];
        assert_eq!(k.len(), expected.len(), "{k:?}");
        for (key, v) in expected {
            assert!(close(k[key], v), "{key}: {} vs {v}", k[key]);
        }
        // Against itself every defined CE is 1; contrast has none, since the own model errs
        // on it only as much as on clean images: relative CE 0 / 0.
        let k = Measure::against(&m, &own, &own).unwrap();
        assert_eq!(k["mce"], 1.0);
        assert_eq!(k["ce_contrast"], 1.0);
        assert_eq!(k["mce_corruptions"], 2.0);
        assert!(!k.contains_key("relative_ce_contrast"), "{k:?}");
        assert_eq!(k["relative_mce"], 1.0);
        // A cell missing on either side (another grid): no keys at all.
        let partial = result(&[("clean_error", 0.0), ("error_fog_1", 0.1)]);
        assert!(Measure::against(&m, &own, &partial).unwrap().is_empty());
    }
}

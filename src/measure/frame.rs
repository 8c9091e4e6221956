//! Shared plumbing of the geometric measures (`grid`, `manifool`, `stadv`,
//! `invariance`): the image shape and layout warps act on, clean
//! predictions, and the per-image result for a misclassified input.
//!
//! Warps act in the measured space of [`SpacedModel`]: planar `(C, H, W)`
//! for image space, the model's own layout for model space (`.npy`).

use std::collections::BTreeMap;

use transforms::{Batch, ImageLayout, ImageShape};

use super::space::{Space, SpacedModel};
use super::Values;
use super::{Context, Counts, ImageResult, Outcome};
use crate::attack::vector::argmax;
use crate::error::{Error, Result};
use crate::spec::Layout;

/// Shape (one image) and layout of the measured space.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame {
    /// `n = 1`; use [`ImageShape::with_n`] for batches.
    pub shape: ImageShape,
    /// Layout of one sample.
    pub layout: ImageLayout,
}

impl Frame {
    /// The model of `ctx` in its measured space, and the frame of that space.
    pub fn of_context<'a>(ctx: &Context<'a>) -> (SpacedModel<'a>, Frame) {
        let sm = SpacedModel::new(ctx.model, ctx.data);
        let frame = Frame::of(&sm);
        (sm, frame)
    }

    /// The frame of `sm`'s measured space.
    pub fn of(sm: &SpacedModel) -> Self {
        let spec = &sm.model.spec;
        let layout = match (sm.space, spec.layout) {
            (Space::Model, Layout::Nhwc) => ImageLayout::Nhwc,
            _ => ImageLayout::Nchw,
        };
        Frame {
            shape: ImageShape::new(1, spec.channels.count(), spec.height, spec.width),
            layout,
        }
    }

    /// Values per image.
    pub fn d(&self) -> usize {
        self.shape.image_len()
    }

    /// A batch view of `n` images stored in `data`.
    pub fn batch<'a>(&self, data: &'a [f32], n: usize) -> Result<Batch<'a>> {
        Batch::new(data, self.shape.with_n(n), self.layout).map_err(warp_error)
    }
}

/// Parses a group name (`rotation`, `affine`, ...) for `measure`.
pub(super) fn parse_group(measure: &str, name: &str) -> Result<transforms::TransformGroup> {
    name.parse()
        .map_err(|e| Error::Config(format!("{measure}: group: {e}")))
}

/// Bilinear sampling with the border mode `border` (`zero`, `replicate`,
/// `reflect`) for `measure`.
pub(super) fn parse_sampling(measure: &str, border: &str) -> Result<transforms::Sampling> {
    let border: transforms::Border = border
        .parse()
        .map_err(|e| Error::Config(format!("{measure}: border: {e}")))?;
    Ok(transforms::Sampling::new(Default::default(), border))
}

/// Converts a `transforms` error into georob's.
pub(super) fn warp_error(e: transforms::Error) -> Error {
    Error::Config(format!("warp: {e}"))
}

/// Clean predictions of the data set in the measured space: the logits of every image,
/// computed a pass of rows at a time. Images are read again, one at a time, when a measure
/// works on them, so that memory does not grow with the data set (only the `n × K` logits
/// do).
pub(super) struct Clean<'a> {
    sm: SpacedModel<'a>,
    data: &'a crate::data::Dataset,
    pub logits: Vec<f32>,
    pub n: usize,
}

impl<'a> Clean<'a> {
    pub fn load(ctx: &Context<'a>, sm: &SpacedModel<'a>) -> Result<Self> {
        let n = ctx.data.len();
        let rows = sm.model.executor().pass_rows();
        let mut logits = Vec::with_capacity(n * sm.classes());
        for start in (0..n).step_by(rows) {
            let len = rows.min(n - start);
            let u = sm.load(ctx.data, start, len)?;
            logits.extend(sm.logits(&u, len)?);
        }
        Ok(Clean {
            sm: *sm,
            data: ctx.data,
            logits,
            n,
        })
    }

    /// Clean prediction of image `i`.
    pub fn pred(&self, i: usize, k: usize) -> usize {
        argmax(&self.logits[i * k..(i + 1) * k])
    }

    /// Image `i`'s values, read from the data set.
    pub fn image(&self, i: usize) -> Result<Vec<f32>> {
        self.sm.load(self.data, i, 1)
    }
}

/// A result row for image `index` with `outcome` and `values`.
pub(super) fn result(
    ctx: &Context,
    index: usize,
    pred: usize,
    outcome: Outcome,
    values: Values,
) -> ImageResult {
    ImageResult::new(index, &ctx.data.items[index], pred, outcome, values)
}

/// Whether the clean prediction disagrees with a given label.
pub(super) fn misclassified(ctx: &Context, index: usize, pred: usize) -> bool {
    ctx.data.items[index].label.is_some_and(|l| l != pred)
}

/// Percentile `q ∈ [0, 1]` of finite values (nearest rank on the sorted values).
pub(super) fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[i])
}

/// Outcome counts of `images`, and the summary a search over transforms starts from:
/// `images` (how many) and, where any image was searched, `success_rate`, fooled over
/// fooled and failed.
pub(super) fn search_summary(images: &[ImageResult]) -> (Counts, BTreeMap<String, f64>) {
    let counts = Counts::of(images);
    let mut summary = BTreeMap::from([("images".to_string(), images.len() as f64)]);
    let searched = counts.fooled + counts.failed;
    if searched > 0 {
        summary.insert(
            "success_rate".into(),
            counts.fooled as f64 / searched as f64,
        );
    }
    (counts, summary)
}

/// Adds `prefix_{mean,median,p10,p90}` of `values` to `summary` (when any).
pub(super) fn describe(summary: &mut BTreeMap<String, f64>, prefix: &str, values: &[f64]) {
    if let Some(m) = super::mean(values) {
        summary.insert(format!("mean_{prefix}"), m);
    }
    if let Some(m) = super::median(values) {
        summary.insert(format!("median_{prefix}"), m);
    }
    if let Some(p) = percentile(values, 0.1) {
        summary.insert(format!("p10_{prefix}"), p);
    }
    if let Some(p) = percentile(values, 0.9) {
        summary.insert(format!("p90_{prefix}"), p);
    }
}

/// Saves panels (original | transformed) of up to three images as
/// `{stem}_{index}.png` in `dir`: `shown` lists (index, transformed values,
/// caption). Planar layouts only; NHWC model space is skipped.
pub(super) fn save_panels(
    dir: &std::path::Path,
    stem: &str,
    frame: &Frame,
    clean: &Clean,
    shown: &[(usize, Vec<f32>, String)],
) -> Result<Vec<super::Artifact>> {
    let mut out = Vec::new();
    if frame.layout != transforms::ImageLayout::Nchw {
        return Ok(out);
    }
    let s = frame.shape;
    let shape = (s.c, s.h, s.w);
    for (i, warped, caption) in shown.iter().take(3) {
        let pics = [
            super::picture::to_rgb(&clean.image(*i)?, shape, |v| v),
            super::picture::to_rgb(warped, shape, |v| v),
        ];
        let Some(pics) = pics.into_iter().collect::<Option<Vec<_>>>() else {
            return Ok(out);
        };
        let name = format!("{stem}_{i}.png");
        super::picture::save(&super::picture::panels(&pics), &dir.join(&name))?;
        out.push(super::Artifact {
            description: caption.clone(),
            path: name,
        });
    }
    Ok(out)
}

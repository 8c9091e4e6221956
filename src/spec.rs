//! How a model wants its input and what it outputs: layout, size, channels,
//! normalisation and output kind, read from the model, a sidecar
//! `MODEL.georob.toml` and command-line overrides (in that order of priority,
//! lowest first).
//!
//! # Sidecar format
//!
//! ```toml
//! [input]
//! layout = "NCHW"        # NCHW or NHWC
//! size = [224, 224]      # height, width the model takes
//! channels = "rgb"       # gray | rgb | bgr
//! scale = 1.0            # pixels are read into [0,1] and multiplied by this
//! mean = [0.498, 0.498, 0.498]  # per channel (or one value for all), subtracted after scaling
//! std = [0.502, 0.502, 0.502]   # per channel (or one value for all), divided after subtracting
//! [output]
//! kind = "logits"        # logits | probs
//! classes = "imagenet_classes.txt"  # optional: one class name per line, relative to the sidecar
//! ```
//!
//! Every key is optional; what is missing comes from the model (layout, size,
//! channel count, output kind) or from the defaults (scale 1, mean 0, std 1).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Memory layout of a model's 4-D image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Layout {
    /// (batch, channels, height, width).
    Nchw,
    /// (batch, height, width, channels).
    Nhwc,
}

impl std::str::FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "NCHW" => Ok(Layout::Nchw),
            "NHWC" => Ok(Layout::Nhwc),
            _ => Err(Error::Config(format!(
                "unknown layout {s:?}: use NCHW or NHWC"
            ))),
        }
    }
}

/// Colour channels the model expects, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// One luminance channel.
    Gray,
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (Caffe/OpenCV exports).
    Bgr,
}

impl Channels {
    /// Number of channels.
    pub fn count(self) -> usize {
        match self {
            Channels::Gray => 1,
            Channels::Rgb | Channels::Bgr => 3,
        }
    }
}

impl std::str::FromStr for Channels {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gray" | "grey" | "l" => Ok(Channels::Gray),
            "rgb" => Ok(Channels::Rgb),
            "bgr" => Ok(Channels::Bgr),
            _ => Err(Error::Config(format!(
                "unknown channels {s:?}: use gray, rgb or bgr"
            ))),
        }
    }
}

/// What the model's output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unnormalised scores (pre-softmax).
    Logits,
    /// Probabilities (the graph ends in a softmax).
    Probs,
}

impl std::str::FromStr for OutputKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "logits" => Ok(OutputKind::Logits),
            "probs" | "probabilities" => Ok(OutputKind::Probs),
            _ => Err(Error::Config(format!(
                "unknown output kind {s:?}: use logits or probs"
            ))),
        }
    }
}

/// The complete, resolved input specification of a model.
///
/// A pixel `u` in `[0,1]` of channel `c` becomes `(u * scale - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Tensor layout.
    pub layout: Layout,
    /// Height and width in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Channel order.
    pub channels: Channels,
    /// Multiplier applied to pixels in `[0,1]` (e.g. 255 for Caffe-style models).
    pub scale: f32,
    /// Per-channel mean subtracted after scaling (length = channel count).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided after subtracting the mean.
    pub std: Vec<f32>,
    /// What the model outputs.
    pub output: OutputKind,
}

impl InputSpec {
    /// Resolves the input spec of the model at `path` from what its graph fixes (its input
    /// `layout` where known, channels/height/width per layout from `chw`, whether it ends in
    /// a `Softmax`) and the overrides `s` (flags over sidecar); whatever the graph leaves open
    /// must be given, and what is given must agree with the graph. `origin` says where a
    /// setting (`size`, `mean`, …) came from, for errors (`--size`, the sidecar's key).
    pub fn resolve(
        path: &Path,
        layout: Option<Layout>,
        chw: impl Fn(Layout) -> [Option<usize>; 3],
        ends_in_softmax: bool,
        s: &SpecOverrides,
        origin: &dyn Fn(&str) -> String,
    ) -> Result<InputSpec> {
        let not = |reason: String| Error::NotAClassifier {
            path: path.to_path_buf(),
            reason,
        };
        let layout = match (s.layout, layout) {
        (Some(l), _) => l,
        (None, Some(l)) => l,
        (None, None) => return Err(not(
            "cannot tell whether its input is NCHW or NHWC; pass --layout or set it in the sidecar"
                .into(),
        )),
    };
        let [c0, h0, w0] = chw(layout);
        // What the model's dimensions are read as, when a setting chose it.
        let laid = match s.layout {
            Some(l) => format!(" when read as {l:?} ({})", origin("layout")),
            None => String::new(),
        };
        let (height, width) = match (s.size, h0, w0) {
            (Some((h, w)), Some(mh), Some(mw)) if (h, w) != (mh, mw) => {
                return Err(Error::Config(format!(
                    "{} asks for size {h}x{w} but {} takes {mh}x{mw}{laid}",
                    origin("size"),
                    path.display()
                )))
            }
            (Some(hw), _, _) => hw,
            (None, Some(h), Some(w)) => (h, w),
            _ => return Err(not(
                "its input height/width are dynamic; pass --size HxW or set size in the sidecar"
                    .into(),
            )),
        };
        if height == 0 || width == 0 {
            return Err(not(format!(
                "its input size is {height}x{width}; height and width must be positive"
            )));
        }
        let channels = match (s.channels, c0) {
            (Some(ch), Some(mc)) if ch.count() != mc => {
                return Err(Error::Config(format!(
                    "{} asks for channels {ch:?} ({} channel(s)) but {} takes {mc}",
                    origin("channels"),
                    ch.count(),
                    path.display()
                )))
            }
            (Some(ch), _) => ch,
            (None, Some(1)) => Channels::Gray,
            (None, Some(3)) => Channels::Rgb,
            (None, other) => {
                return Err(not(format!(
                    "its input has {} channels{laid}; georob reads gray (1) or colour (3) images",
                    other.map_or("a dynamic number of".to_string(), |c| c.to_string())
                )));
            }
        };
        let n = channels.count();
        let mean = per_channel(s.mean.as_ref(), n, 0.0, &origin("mean"))?;
        let std = per_channel(s.std.as_ref(), n, 1.0, &origin("std"))?;
        if std.iter().any(|&v| v == 0.0 || !v.is_finite()) {
            return Err(Error::Config(format!(
                "{}: std must be finite and non-zero, got {std:?}",
                origin("std")
            )));
        }
        let output = s.output.unwrap_or(match ends_in_softmax {
            true => OutputKind::Probs,
            false => OutputKind::Logits,
        });
        Ok(InputSpec {
            layout,
            height,
            width,
            channels,
            scale: s.scale.unwrap_or(1.0),
            mean,
            std,
            output,
        })
    }

    /// Shape of one sample as the model takes it: `[C, H, W]` or `[H, W, C]`.
    pub fn sample_shape(&self) -> [usize; 3] {
        let c = self.channels.count();
        match self.layout {
            Layout::Nchw => [c, self.height, self.width],
            Layout::Nhwc => [self.height, self.width, c],
        }
    }

    /// Number of scalars in one sample.
    pub fn sample_len(&self) -> usize {
        self.channels.count() * self.height * self.width
    }

    /// Model-space value of pixel value `u` in `[0,1]` for channel `c`.
    #[inline]
    pub fn normalise(&self, c: usize, u: f32) -> f32 {
        (u * self.scale - self.mean[c]) / self.std[c]
    }
}

/// Partial settings: from a sidecar file or from command-line flags.
/// `None` means "not given here".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecOverrides {
    /// Tensor layout.
    pub layout: Option<Layout>,
    /// (height, width).
    pub size: Option<(usize, usize)>,
    /// Channel order.
    pub channels: Option<Channels>,
    /// Pixel multiplier.
    pub scale: Option<f32>,
    /// Per-channel mean (one value means all channels).
    pub mean: Option<Vec<f32>>,
    /// Per-channel std (one value means all channels).
    pub std: Option<Vec<f32>>,
    /// Output kind.
    pub output: Option<OutputKind>,
    /// File with one class name per line.
    pub classes: Option<PathBuf>,
}

impl SpecOverrides {
    /// Whether the setting `key` (`layout`, `size`, `channels`, `scale`, `mean`, `std`,
    /// `output`, `classes`) is given here.
    pub fn has(&self, key: &str) -> bool {
        match key {
            "layout" => self.layout.is_some(),
            "size" => self.size.is_some(),
            "channels" => self.channels.is_some(),
            "scale" => self.scale.is_some(),
            "mean" => self.mean.is_some(),
            "std" => self.std.is_some(),
            "output" => self.output.is_some(),
            "classes" => self.classes.is_some(),
            _ => false,
        }
    }

    /// Values of `other` win over values of `self`.
    pub fn overridden_by(self, other: &SpecOverrides) -> SpecOverrides {
        SpecOverrides {
            layout: other.layout.or(self.layout),
            size: other.size.or(self.size),
            channels: other.channels.or(self.channels),
            scale: other.scale.or(self.scale),
            mean: other.mean.clone().or(self.mean),
            std: other.std.clone().or(self.std),
            output: other.output.or(self.output),
            classes: other.classes.clone().or(self.classes),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarFile {
    #[serde(default)]
    input: SidecarInput,
    #[serde(default)]
    output: SidecarOutput,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarInput {
    layout: Option<String>,
    size: Option<Vec<usize>>,
    channels: Option<String>,
    scale: Option<f32>,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarOutput {
    kind: Option<String>,
    classes: Option<PathBuf>,
}

/// Path of the sidecar of `model`: `dir/name.onnx` → `dir/name.georob.toml`.
pub fn sidecar_path(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    model.with_file_name(format!("{stem}.georob.toml"))
}

/// Reads the sidecar of `model` if there is one.
pub fn read_sidecar(model: &Path) -> Result<Option<SpecOverrides>> {
    let path = sidecar_path(model);
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::read::text(&path, crate::read::TEXT_CAP)?;
    parse_sidecar(&text, &path).map(Some)
}

/// Parses sidecar text; `path` names the file in errors and anchors `classes`.
pub fn parse_sidecar(text: &str, path: &Path) -> Result<SpecOverrides> {
    let bad = |reason: String| Error::Settings {
        path: path.to_path_buf(),
        reason,
    };
    let file: SidecarFile = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
    fn parsed<T: std::str::FromStr<Err = Error>>(v: Option<String>) -> Result<Option<T>> {
        v.map(|s| s.parse()).transpose()
    }
    let input = file.input;
    let size = match input.size.as_deref() {
        None => None,
        Some(&[h, w]) if h > 0 && w > 0 => Some((h, w)),
        Some(v) => {
            return Err(bad(format!(
                "size = {v:?}: expected [height, width], both positive"
            )))
        }
    };
    check_finite("scale", input.scale.as_slice()).map_err(bad)?;
    check_finite("mean", input.mean.as_deref().unwrap_or_default()).map_err(bad)?;
    check_finite("std", input.std.as_deref().unwrap_or_default()).map_err(bad)?;
    let sub = |e: Error| bad(e.to_string());
    let classes = match file.output.classes {
        Some(c) => Some(confined(path, &c).map_err(bad)?),
        None => None,
    };
    Ok(SpecOverrides {
        layout: parsed(input.layout).map_err(sub)?,
        size,
        channels: parsed(input.channels).map_err(sub)?,
        scale: input.scale,
        mean: input.mean,
        std: input.std,
        output: parsed(file.output.kind).map_err(sub)?,
        classes,
    })
}

/// The sidecar's `classes` file `c`, joined to the sidecar's folder: a sidecar travels with a
/// model that may be hostile, so the file must lie inside that folder (a relative path
/// without `..`, not reaching outside through a symbolic link).
fn confined(sidecar: &Path, c: &Path) -> std::result::Result<PathBuf, String> {
    use std::path::Component;
    let refuse = |why: &str| {
        Err(format!(
            "classes = {:?}: {why}; the class names must lie in the sidecar's folder \
             (or pass --classes)",
            c.display().to_string()
        ))
    };
    if c.as_os_str().is_empty() || !c.components().all(|p| matches!(p, Component::Normal(_))) {
        return refuse("absolute paths and `..` are not allowed");
    }
    let dir = sidecar.parent().unwrap_or(Path::new("."));
    let joined = dir.join(c);
    // Where the file exists, its real path must stay in the folder's real path.
    if let (Ok(real), Ok(folder)) = (joined.canonicalize(), dir.canonicalize()) {
        if !real.starts_with(&folder) {
            return refuse("it leads outside the folder through a symbolic link");
        }
    }
    Ok(joined)
}

/// Fails unless every value of the setting `what` is a finite float32 (`1e39` is read as
/// infinity): the why, to be prefixed with where the setting came from.
pub fn check_finite(what: &str, values: &[f32]) -> std::result::Result<(), String> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(format!(
            "{what} = {v}: every value must be a finite number (within ±3.4e38)"
        )),
        None => Ok(()),
    }
}

/// Expands a one-value list to `n` channels and checks the length.
pub(crate) fn per_channel(
    values: Option<&Vec<f32>>,
    n: usize,
    default: f32,
    what: &str,
) -> Result<Vec<f32>> {
    match values {
        None => Ok(vec![default; n]),
        Some(v) if v.len() == 1 => Ok(vec![v[0]; n]),
        Some(v) if v.len() == n => Ok(v.clone()),
        Some(v) => Err(Error::Config(format!(
            "{what} has {} values but the model takes {n} channels",
            v.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_parses_every_key() {
        let text = r#"
            [input]
            layout = "NHWC"
            size = [32, 48]
            channels = "bgr"
            scale = 255.0
            mean = [1.0, 2.0, 3.0]
            std = [4.0]
            [output]
            kind = "probs"
            classes = "names.txt"
        "#;
        let s = parse_sidecar(text, Path::new("/m/model.georob.toml")).unwrap();
        assert_eq!(s.layout, Some(Layout::Nhwc));
        assert_eq!(s.size, Some((32, 48)));
        assert_eq!(s.channels, Some(Channels::Bgr));
        assert_eq!(s.scale, Some(255.0));
        assert_eq!(s.std, Some(vec![4.0]));
        assert_eq!(s.output, Some(OutputKind::Probs));
        assert_eq!(s.classes, Some(PathBuf::from("/m/names.txt")));
    }

    #[test]
    fn sidecar_classes_stay_in_the_sidecars_folder() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.txt");
        std::fs::write(&secret, "a\nb\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("names.txt"), "a\nb\n").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("link.txt")).unwrap();
        let sidecar = dir.path().join("m.georob.toml");
        let s = parse_sidecar("[output]\nclasses = \"names.txt\"", &sidecar).unwrap();
        assert_eq!(s.classes, Some(dir.path().join("names.txt")));
        let e = parse_sidecar("[output]\nclasses = \"link.txt\"", &sidecar).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn sidecar_rejects_unknown_keys_and_values() {
        let p = Path::new("x.georob.toml");
        let e = parse_sidecar("[input]\nlayot = \"NCHW\"", p).unwrap_err();
        assert!(e.to_string().contains("x.georob.toml"), "{e}");
        assert!(e.to_string().contains("layot"), "{e}");
        let e = parse_sidecar("[input]\nlayout = \"CHW\"", p).unwrap_err();
        assert!(e.to_string().contains("CHW"), "{e}");
        for outside in ["../names.txt", "/etc/passwd", "a/../../b.txt", ""] {
            let text = format!("[output]\nclasses = {outside:?}");
            let e = parse_sidecar(&text, p).unwrap_err().to_string();
            assert!(e.contains("x.georob.toml") && e.contains("classes"), "{e}");
        }
        let e = parse_sidecar("[input]\nsize = [0, 0]", p).unwrap_err();
        assert!(
            e.to_string().contains("x.georob.toml: size = [0, 0]"),
            "{e}"
        );
    }

    #[test]
    fn overrides_take_priority() {
        let a = SpecOverrides {
            scale: Some(2.0),
            layout: Some(Layout::Nchw),
            ..Default::default()
        };
        let b = SpecOverrides {
            layout: Some(Layout::Nhwc),
            ..Default::default()
        };
        let c = a.overridden_by(&b);
        assert_eq!(c.layout, Some(Layout::Nhwc));
        assert_eq!(c.scale, Some(2.0));
    }

    #[test]
    fn sidecar_path_replaces_extension() {
        assert_eq!(
            sidecar_path(Path::new("a/b/net.onnx")),
            PathBuf::from("a/b/net.georob.toml")
        );
    }

    #[test]
    fn normalise_applies_scale_mean_std() {
        let spec = InputSpec {
            scale: 255.0,
            mean: vec![100.0, 0.0, 0.0],
            std: vec![2.0, 1.0, 1.0],
            ..crate::testutil::spec(Layout::Nchw, Channels::Rgb, 1, 1)
        };
        assert_eq!(spec.normalise(0, 1.0), (255.0 - 100.0) / 2.0);
        assert_eq!(spec.sample_shape(), [3, 1, 1]);
    }
}

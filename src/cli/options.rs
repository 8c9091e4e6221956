//! Turns raw arguments into validated library options.

use anyhow::{bail, Context, Result};
use georob::model::ModelOptions;
use georob::spec::SpecOverrides;

use super::args::ModelArgs;

fn floats(list: &str, what: &str) -> Result<Vec<f32>> {
    let values = list
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .with_context(|| format!("--{what}: {v:?} is not a number"))
        })
        .collect::<Result<Vec<f32>>>()?;
    georob::spec::check_finite(what, &values).map_err(|e| anyhow::anyhow!("--{e}"))?;
    Ok(values)
}

fn size(text: &str) -> Result<(usize, usize)> {
    let parts: Vec<&str> = text.split(['x', 'X']).collect();
    match parts.as_slice() {
        [h, w] => {
            let h: usize = h
                .trim()
                .parse()
                .with_context(|| format!("--size {text:?}"))?;
            let w: usize = w
                .trim()
                .parse()
                .with_context(|| format!("--size {text:?}"))?;
            if h == 0 || w == 0 {
                bail!("--size {text:?}: height and width must be positive");
            }
            Ok((h, w))
        }
        _ => bail!("--size {text:?}: expected HxW, e.g. 224x224"),
    }
}

impl ModelArgs {
    /// Validated model options.
    pub fn options(&self) -> Result<ModelOptions> {
        if self.batch == Some(0) {
            bail!("--batch must be at least 1");
        }
        Ok(ModelOptions {
            backend: self.backend.parse()?,
            ort_lib: self.ort_lib.clone(),
            device: self.device.parse()?,
            threads: self.threads,
            batch: self.batch,
            spec: SpecOverrides {
                layout: self.layout.as_deref().map(str::parse).transpose()?,
                size: self.size.as_deref().map(size).transpose()?,
                channels: self.channels.as_deref().map(str::parse).transpose()?,
                scale: self
                    .scale
                    .map(|s| {
                        georob::spec::check_finite("scale", &[s])
                            .map_err(|e| anyhow::anyhow!("--{e}"))?;
                        Ok::<f32, anyhow::Error>(s)
                    })
                    .transpose()?,
                mean: self
                    .mean
                    .as_deref()
                    .map(|m| floats(m, "mean"))
                    .transpose()?,
                std: self.std.as_deref().map(|s| floats(s, "std")).transpose()?,
                output: self.output.as_deref().map(str::parse).transpose()?,
                classes: self.classes.clone(),
            },
            use_sidecar: !self.no_sidecar,
            gradient: self.gradient.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_lists_parse() {
        assert_eq!(size("224x200").unwrap(), (224, 200));
        assert!(size("224").is_err());
        assert!(size("0x3").is_err());
        assert_eq!(floats("0.5, 1,2", "mean").unwrap(), vec![0.5, 1.0, 2.0]);
        assert!(floats("a", "mean").is_err());
    }
}

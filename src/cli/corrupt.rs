//! `georob corrupt DATA --corruption NAME --severity S --out DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use georob::corrupt::{image_seed, Corruption, Severity};
use georob::data::{decode, Dataset, Item};
use georob::progress::Progress;
use rayon::prelude::*;

use super::args::CorruptArgs;

pub fn run(args: &CorruptArgs) -> Result<ExitCode> {
    if args.list {
        return list();
    }
    let (Some(data), Some(out)) = (&args.data, &args.out) else {
        bail!("georob corrupt needs DATA and --out DIR (or --list)");
    };
    let corruptions = corruptions(args.corruption.as_deref())?;
    let severities = severities(args.severity.as_deref())?;
    let dataset = Dataset::open(data, None)?;
    if dataset.items.iter().any(|i| i.path.is_none()) {
        bail!(
            "{}: georob corrupt reads image files; .npy data (model-space tensors, uint8 arrays) are not",
            data.display()
        );
    }
    let jobs: Vec<(Corruption, Severity, usize)> = corruptions
        .iter()
        .flat_map(|&c| severities.iter().map(move |&s| (c, s)))
        .flat_map(|(c, s)| (0..dataset.len()).map(move |i| (c, s, i)))
        .collect();
    let bar = Progress::new(args.quiet).bar(jobs.len() as u64, "corrupt");
    jobs.par_iter().try_for_each(|&(c, s, i)| -> Result<()> {
        let item = &dataset.items[i];
        let source = item.path.as_deref().expect("image items have paths");
        let image = decode(source)?;
        let seed = image_seed(args.seed, dataset.position(i));
        let target = target(out, c, s, item);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        c.apply_image(&image, s, seed)
            .save(&target)
            .with_context(|| format!("cannot write {}", target.display()))?;
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    if !args.quiet {
        eprintln!(
            "georob: wrote {} into {} (CORRUPTION/SEVERITY/NAME.png)",
            super::images(jobs.len()),
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `DIR/CORRUPTION/SEVERITY/NAME.png`, NAME the item's path in the data set (class folder
/// included): the layout of published corruption sets such as ImageNet-C.
fn target(out: &Path, c: Corruption, s: Severity, item: &Item) -> PathBuf {
    out.join(c.name())
        .join(s.to_string())
        .join(&item.name)
        .with_extension("png")
}

fn corruptions(name: Option<&str>) -> Result<Vec<Corruption>> {
    match name {
        None => {
            bail!("--corruption is required: a name, or `all` (`georob corrupt --list` lists them)")
        }
        Some("all") => Ok(Corruption::ALL.to_vec()),
        Some(n) => Ok(vec![n.parse::<Corruption>().context("--corruption")?]),
    }
}

fn severities(level: Option<&str>) -> Result<Vec<Severity>> {
    match level {
        None => bail!("--severity is required: 1 to 5, or `all`"),
        Some("all") => Ok(Severity::all().collect()),
        Some(text) => {
            let level: u8 = text.trim().parse().with_context(|| {
                format!("--severity {text:?}: not a level; valid severities: 1, 2, 3, 4, 5, all")
            })?;
            Ok(vec![Severity::new(level).context("--severity")?])
        }
    }
}

fn list() -> Result<ExitCode> {
    let mut t = super::table(&["corruption", "family", "random", "what it does"]);
    for c in Corruption::ALL {
        t.add_row(vec![
            c.name(),
            c.family(),
            if c.is_random() { "yes" } else { "no" },
            c.description(),
        ]);
    }
    super::emit(&format!("{t}\n"))?;
    Ok(ExitCode::SUCCESS)
}

//! The files a measure names in its parameters (UAP's held-out data, the models it transfers
//! to), opened from disk for the audit and the CLI.

use std::path::Path;

use crate::data::Dataset;
use crate::error::Result;
use crate::measure::Resources;
use crate::model::{Model, ModelOptions};

/// Opens data sets and models from files; models with the options of the audited model.
pub struct Files {
    /// Options every model is opened with.
    pub options: ModelOptions,
}

impl Files {
    /// Opens models as `model` was opened.
    pub fn like(model: &Model) -> Files {
        Files {
            options: model.options().clone(),
        }
    }
}

impl Resources for Files {
    fn dataset(&self, path: &Path, labels: Option<&Path>) -> Result<Dataset> {
        Dataset::open(path, labels)
    }

    fn model(&self, path: &Path) -> Result<Model> {
        Model::open(path, &self.options)
    }
}

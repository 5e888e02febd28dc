//! Stage 4, write: one writer per kind of output behind [`Writer`], each pulling the
//! planned tensors through the run stage in plan order and renaming its result into place
//! only when complete.

mod container;
mod folder;
pub(super) mod metadata;
mod safetensors;

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::configure::{ModelQuantizer, Output};
use crate::error::Result;
use crate::load::ModelFiles;
use crate::plan::Plan;

/// Writes a planned model into one kind of output.
pub(super) trait Writer {
    /// Writes every file of `plan` to `dest`; returns the files written.
    fn write(
        &self,
        q: &ModelQuantizer,
        model: &ModelFiles,
        plan: &Plan,
        dest: &Path,
        start: Instant,
    ) -> Result<Vec<PathBuf>>;
}

/// True when `dir` is an output folder that `--shard I/N` workers are still filling.
pub(super) fn is_worker_folder(dir: &Path) -> bool {
    folder::is_worker_folder(dir)
}

/// Where workers stage their manifests and tie files in output folder `dir`.
pub(super) fn folder_staging(dir: &Path) -> PathBuf {
    dir.join(folder::STAGING)
}

/// The writer for `output`.
pub(super) fn writer_for(output: Output) -> Box<dyn Writer> {
    match output {
        Output::File => Box::new(safetensors::SafetensorsFile),
        Output::Folder => Box::new(folder::Folder),
        Output::Container(c) => Box::new(container::ContainerFile(c)),
    }
}

//! Stage 4, write: one writer per kind of output behind [`Writer`], each pulling the
//! planned tensors through the run stage in plan order and renaming its result into place
//! only when complete.

mod container;
mod folder;
pub(super) mod metadata;
mod safetensors;
pub(super) mod worker;

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

/// True when `workers` (`--shard I/N`) are still filling output `dest` (a folder, or the
/// files of a split container output).
pub(super) fn is_worker_output(dest: &Path) -> bool {
    worker::staging_for(dest, true).is_dir() || worker::staging_for(dest, false).is_dir()
}

/// The writer for `output`.
pub(super) fn writer_for(output: Output) -> Box<dyn Writer> {
    match output {
        Output::File => Box::new(safetensors::SafetensorsFile),
        Output::Folder => Box::new(folder::Folder),
        Output::Container(c) => Box::new(container::ContainerFile(c)),
    }
}

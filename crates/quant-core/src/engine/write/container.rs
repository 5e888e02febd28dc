//! The writer for a registered container (GGUF): the backend's writer gets the planned
//! tensors, the file-level metadata and the input's reader, then each tensor in order;
//! a split output is one such file per split, each told its place among them.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use super::worker::{staging_for, Share};
use super::{output_parent, Writer};
use crate::engine::configure::ModelQuantizer;
use crate::error::{Error, Result};
use crate::format::{
    ContainerEntry, ContainerWriter, META_SPLIT_COUNT, META_SPLIT_NO, META_SPLIT_TENSORS,
};
use crate::load::ModelFiles;
use crate::method::QuantizedTensor;
use crate::plan::{Plan, PlanEntry};

/// A registered container's file, or the files of a split output.
pub(super) struct ContainerFile(pub(super) &'static ContainerEntry);

impl Writer for ContainerFile {
    fn write(
        &self,
        q: &ModelQuantizer,
        model: &ModelFiles,
        plan: &Plan,
        dest: &Path,
        start: Instant,
    ) -> Result<Vec<PathBuf>> {
        let dir = output_parent(dest)?;
        let info = dest.with_extension("quantization_info.json");
        let mut share = match q.worker {
            Some(w) => Some(Share::begin(w, staging_for(dest, false), dir, plan)?),
            None => None,
        };
        let mut outputs = Vec::new();
        for (f, rel) in plan.files.iter().enumerate() {
            if share.as_ref().is_some_and(|s| !s.owns(f)) {
                continue;
            }
            let path = dir.join(rel);
            if plan.files.len() > 1 && q.worker.is_none() && path.exists() && !q.force {
                return Err(Error::OutputExists { path });
            }
            q.write_container(self.0, model, plan, f, &path)?;
            if let Some(s) = share.as_mut() {
                s.wrote(plan, f)?;
            }
            outputs.push(path);
        }
        match share {
            Some(s) => s.finish(plan, |tie| {
                let name = info.file_name().map(PathBuf::from).unwrap_or_default();
                q.write_info(&tie.join(name), plan, start)
            })?,
            None => q.write_info(&info, plan, start)?,
        }
        Ok(outputs)
    }
}

impl ModelQuantizer {
    /// Writes output file `file` of `plan` (all of it for a single file) to `dest`.
    fn write_container(
        &self,
        c: &'static ContainerEntry,
        model: &ModelFiles,
        plan: &Plan,
        file: usize,
        dest: &Path,
    ) -> Result<()> {
        let idx = plan.entries_of(file);
        let planned = plan.planned_outputs(&idx);
        let mut metadata = self.base_metadata(plan);
        for (_, r) in &model.shards {
            for (k, v) in r.metadata() {
                metadata.entry(format!("source.{k}")).or_insert(v);
            }
        }
        if let Some(cfg) = &model.config {
            metadata.insert("source.config.json".into(), cfg.to_string());
        }
        if plan.files.len() > 1 {
            metadata.insert(META_SPLIT_NO.into(), file.to_string());
            metadata.insert(META_SPLIT_COUNT.into(), plan.files.len().to_string());
            metadata.insert(META_SPLIT_TENSORS.into(), plan.entries.len().to_string());
        }
        let source = match model.shards.as_slice() {
            [(_, r)] => Some(r.as_ref()),
            _ => None,
        };
        let create = || (c.create)(dest, &planned, &metadata, source);
        let entries: Vec<&PlanEntry> = idx.iter().filter_map(|&i| plan.entries.get(i)).collect();
        let w = write_overlapped(create, &entries, |e, scratch| {
            self.tick(e);
            let Some((_, reader)) = model.shards.get(e.shard) else {
                return Err(Error::tensor(
                    &model.root,
                    &e.name,
                    "shard index out of range",
                ));
            };
            self.produce(plan, reader.as_ref(), e, scratch)
                .map_err(|err| err.with_path(&model.root))
        })?;
        w.finish()
    }
}

/// Most output bytes produced but not yet written: while a writer thread writes tensors
/// out, the next ones are quantized, as long as the tensors in flight (the one being
/// produced included) stay this small; a tensor that would pass it waits until the writer
/// has caught up. Peak memory stays the largest tensor's f32 values plus at most this much
/// output (or one tensor's output, when that alone is larger), inside the streaming
/// bound of the largest tensor's f32 size + 256 MiB. Large enough for a 128k-token
/// embedding (Q4_K) to be written while the output head (Q6_K) is quantized.
const IN_FLIGHT_BYTES: u64 = 192 << 20;

/// Creates the file with `create` (which writes its header: for a converted model, the
/// vocabulary), produces `entries` in order with `produce` (given one f32 scratch buffer
/// for all of them) and writes each into the file. On a pool of more than one thread a
/// writer thread creates the file and writes the tensors while this one quantizes: the
/// first tensors are quantized while the header is still being built, and writing into
/// the page cache overlaps quantizing the next tensor. On a pool of one thread, all of it
/// in turn on this one.
///
/// The first error stops both. The file's creation is reported first (as when it came
/// before any tensor), then a produce error, then a write error it may have caused.
fn write_overlapped(
    create: impl FnOnce() -> Result<Box<dyn ContainerWriter>> + Send,
    entries: &[&PlanEntry],
    produce: impl Fn(&PlanEntry, &mut Vec<f32>) -> Result<QuantizedTensor>,
) -> Result<Box<dyn ContainerWriter>> {
    if rayon::current_num_threads() <= 1 {
        // One thread of work means one: produce and write in turn.
        let mut w = create()?;
        let mut scratch = Vec::new();
        for e in entries {
            w.write(&produce(e, &mut scratch)?)?;
        }
        return Ok(w);
    }
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<(QuantizedTensor, u64)>();
        let (ack_tx, ack_rx) = mpsc::channel::<u64>();
        // `Err((true, e))`: the file could not be created.
        let writer = s.spawn(move || -> std::result::Result<_, (bool, Error)> {
            let mut w = create().map_err(|e| (true, e))?;
            for (q, bytes) in rx {
                w.write(&q).map_err(|e| (false, e))?;
                drop(q);
                // The producer may have stopped listening (it failed); nothing to tell.
                let _ = ack_tx.send(bytes);
            }
            Ok(w)
        });
        let mut scratch = Vec::new();
        let mut pending = 0u64;
        let mut produced = Ok(());
        'entries: for e in entries {
            while pending > 0 && pending + e.bytes_out > IN_FLIGHT_BYTES {
                match ack_rx.recv() {
                    Ok(b) => pending -= b,
                    // The writer stopped (its error comes from the join below).
                    Err(_) => break 'entries,
                }
            }
            match produce(e, &mut scratch) {
                Ok(q) => {
                    if tx.send((q, e.bytes_out)).is_err() {
                        break;
                    }
                    pending += e.bytes_out;
                }
                Err(err) => {
                    produced = Err(err);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.join().unwrap_or_else(|_| {
            Err((
                false,
                Error::Io {
                    path: PathBuf::new(),
                    source: std::io::Error::other("the writer thread panicked"),
                },
            ))
        });
        match written {
            Err((true, e)) => Err(e),
            Err((false, e)) => produced.and(Err(e)),
            Ok(w) => produced.map(|()| w),
        }
    })
}

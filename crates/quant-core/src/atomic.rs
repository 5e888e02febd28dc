//! Atomic output: a file is written under a temporary name beside its destination,
//! fsynced and renamed into place, so a failure leaves nothing half-written where a user
//! expects a result.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file written under a temporary name in the destination folder, fsynced and renamed
/// into place by [`AtomicFile::commit`]; dropped without commit, the temporary is removed.
pub struct AtomicFile {
    tmp: PathBuf,
    pub(crate) dest: PathBuf,
    pub(crate) writer: Option<BufWriter<File>>,
}

/// The temporary name used for `dest`: `.NAME.quant-tmp-PID` beside it.
pub fn temp_path_for(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    dest.with_file_name(format!(".{name}.quant-tmp-{}", std::process::id()))
}

/// Removes temporaries of earlier, interrupted runs for `dest` (`.NAME.quant-tmp-*`).
pub fn clean_stale_temps(dest: &Path) {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.quant-tmp-", name.to_string_lossy());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let p = entry.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
}

/// Fails with [`Error::OutputExists`] when `dest` exists and `force` is false.
pub fn check_output(dest: &Path, force: bool) -> Result<()> {
    if dest.exists() && !force {
        return Err(Error::OutputExists {
            path: dest.to_path_buf(),
        });
    }
    Ok(())
}

impl AtomicFile {
    /// Creates the temporary for `dest`. The destination folder must exist.
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        clean_stale_temps(&dest);
        let tmp = temp_path_for(&dest);
        let file = File::create(&tmp).map_err(|e| Error::io(&dest, e))?;
        Ok(AtomicFile {
            tmp,
            dest,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Writes bytes.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.write_all(bytes).map_err(|e| Error::io(&self.dest, e)),
            None => Err(Error::io(
                &self.dest,
                std::io::Error::other("write after commit"),
            )),
        }
    }

    /// Flushes, fsyncs and renames the temporary into place.
    pub fn commit(mut self) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&self.dest, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.dest, e))?;
        drop(file);
        rename_durable(&self.tmp, &self.dest)
    }
}

/// Renames `from` to `to` and fsyncs the destination's folder, so that the rename itself
/// survives a crash. A filesystem that cannot fsync a folder (`EINVAL`) is not an error.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        if let Err(e) = d.sync_all() {
            if !matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) {
                return Err(Error::io(dir, e));
            }
        }
    }
    Ok(())
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.writer.as_mut() {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("write after commit")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

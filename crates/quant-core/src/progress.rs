//! Progress of long operations: the hook the engine calls as it goes through a model's
//! tensors (and the commands call per tensor or per chunk), with the counts a progress bar
//! or a log line needs. Drawing is the caller's business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One report of a running operation.
#[derive(Clone, Copy, Debug)]
pub struct Tick<'a> {
    /// What runs: a component of a pipeline, or empty for the only thing running.
    pub scope: &'a str,
    /// The item being worked on now (a tensor name, `chunk 3`); empty once all are done.
    pub item: &'a str,
    /// Items finished.
    pub done: u64,
    /// Items in all.
    pub total: u64,
    /// Bytes finished (of the input), 0 when the work is not counted in bytes.
    pub bytes_done: u64,
    /// Bytes in all, 0 when the work is not counted in bytes.
    pub bytes_total: u64,
    /// Something to show beside the counts (e.g. imatrix's running perplexity).
    pub note: &'a str,
}

/// The progress hook: called at the start of each item and once when all are done.
pub type Progress = Arc<dyn Fn(&Tick<'_>) + Send + Sync>;

/// Counts the items and bytes of one operation and reports each step to a hook.
pub struct Meter {
    hook: Option<Progress>,
    scope: String,
    total: u64,
    bytes_total: u64,
    done: AtomicU64,
    bytes_done: AtomicU64,
    note: Mutex<String>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("scope", &self.scope)
            .field("total", &self.total)
            .field("done", &self.done.load(Ordering::Relaxed))
            .finish()
    }
}

impl Meter {
    /// A meter for `total` items of `bytes_total` bytes in all (0: not counted in bytes),
    /// reporting to `hook` (none: counts only) under `scope`.
    pub fn new(hook: Option<Progress>, scope: &str, total: u64, bytes_total: u64) -> Self {
        Meter {
            hook,
            scope: scope.to_string(),
            total,
            bytes_total,
            done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            note: Mutex::new(String::new()),
        }
    }

    fn report(&self, item: &str) {
        if let Some(h) = &self.hook {
            let note = self.note.lock().map(|n| n.clone()).unwrap_or_default();
            h(&Tick {
                scope: &self.scope,
                item,
                done: self.done.load(Ordering::Relaxed),
                total: self.total,
                bytes_done: self.bytes_done.load(Ordering::Relaxed),
                bytes_total: self.bytes_total,
                note: &note,
            });
        }
    }

    /// Reports that `item` starts.
    pub fn start(&self, item: &str) {
        self.report(item);
    }

    /// Counts one item of `bytes` bytes as finished.
    pub fn finished(&self, bytes: u64) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Reports `item` as starting and counts it finished at once: for a hook that only
    /// needs to know where the work is.
    pub fn step(&self, item: &str, bytes: u64) {
        self.report(item);
        self.finished(bytes);
    }

    /// Sets the note shown from the next report on.
    pub fn set_note(&self, note: impl Into<String>) {
        if let Ok(mut n) = self.note.lock() {
            *n = note.into();
        }
    }

    /// Reports the end (an empty item).
    pub fn end(&self) {
        self.report("");
    }
}

/// `hook` with every report's scope set to `scope` (a pipeline component's name).
pub fn scoped(hook: &Progress, scope: &str) -> Progress {
    let hook = hook.clone();
    let scope = scope.to_string();
    Arc::new(move |t: &Tick<'_>| {
        hook(&Tick {
            scope: &scope,
            ..*t
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_counts_and_reports_each_start_and_the_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let hook: Progress = Arc::new(move |t: &Tick<'_>| {
            s.lock().unwrap().push(format!(
                "{}:{}:{}/{}:{}/{}:{}",
                t.scope, t.item, t.done, t.total, t.bytes_done, t.bytes_total, t.note
            ))
        });
        let m = Meter::new(Some(scoped(&hook, "unet")), "", 2, 30);
        m.start("a");
        m.finished(10);
        m.set_note("ppl 5");
        m.step("b", 20);
        m.end();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "unet:a:0/2:0/30:",
                "unet:b:1/2:10/30:ppl 5",
                "unet::2/2:30/30:ppl 5"
            ]
        );
    }
}

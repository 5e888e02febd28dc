//! How every command shows progress on stderr: one bar on a terminal, plain periodic lines
//! otherwise (CI logs, Slurm output), nothing with `--quiet`; fed by quant's progress hook.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quant::progress::{Meter, Progress, Tick};

use crate::cmd::util::human;

/// Seconds between two plain lines, unless the environment variable
/// `QUANT_PROGRESS_SECONDS` says otherwise (0: a line for every item).
const LINE_EVERY: Duration = Duration::from_secs(30);

fn line_every() -> Duration {
    std::env::var("QUANT_PROGRESS_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(LINE_EVERY)
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A bar redrawn in place (stderr is a terminal).
    Bar,
    /// A line every 30 s (`QUANT_PROGRESS_SECONDS`) and one at the end.
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// The mode for this process: `--quiet`, else by whether stderr is a terminal.
    pub fn detect(quiet: bool) -> Self {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// What one scope (a command, or one component of a pipeline) has shown so far.
struct Scope {
    name: String,
    start: Instant,
    bar: Option<ProgressBar>,
    last_line: Instant,
}

/// Shows the progress of one command (`quantize`, `dequantize`, ...), counting `unit`s.
pub struct Reporter {
    mode: Mode,
    what: &'static str,
    unit: &'static str,
    every: Duration,
    scope: Mutex<Option<Scope>>,
}

impl Reporter {
    /// A reporter for command `what` counting `unit`s (`tensors`, `chunks`).
    pub fn new(mode: Mode, what: &'static str, unit: &'static str) -> Arc<Self> {
        Arc::new(Reporter {
            mode,
            what,
            unit,
            every: line_every(),
            scope: Mutex::new(None),
        })
    }

    /// The hook to give quant (none when quiet).
    pub fn hook(self: &Arc<Self>) -> Option<Progress> {
        if self.mode == Mode::Quiet {
            return None;
        }
        let me = self.clone();
        Some(Arc::new(move |t: &Tick<'_>| me.tick(t)))
    }

    /// A meter of `total` items (`bytes` in all, 0: not counted in bytes) feeding this
    /// reporter, for the loops of the commands themselves.
    pub fn meter(self: &Arc<Self>, total: u64, bytes: u64) -> Meter {
        Meter::new(self.hook(), "", total, bytes)
    }

    /// Clears the bar (before the summary is printed).
    pub fn finish(&self) {
        if let Ok(mut s) = self.scope.lock() {
            if let Some(bar) = s.take().and_then(|s| s.bar) {
                bar.finish_and_clear();
            }
        }
    }

    fn label(&self, scope: &str) -> String {
        if scope.is_empty() {
            self.what.to_string()
        } else {
            format!("{} {scope}", self.what)
        }
    }

    fn tick(&self, t: &Tick<'_>) {
        let Ok(mut slot) = self.scope.lock() else {
            return;
        };
        let now = Instant::now();
        let fresh = slot.as_ref().is_none_or(|s| s.name != t.scope);
        if fresh {
            if let Some(bar) = slot.take().and_then(|s| s.bar) {
                bar.finish_and_clear();
            }
            *slot = Some(Scope {
                name: t.scope.to_string(),
                start: now,
                bar: (self.mode == Mode::Bar).then(|| self.new_bar(t)),
                last_line: now,
            });
        }
        let Some(s) = slot.as_mut() else {
            return;
        };
        let (pos, len) = if t.bytes_total > 0 {
            (t.bytes_done, t.bytes_total)
        } else {
            (t.done, t.total)
        };
        match &s.bar {
            Some(bar) => {
                bar.set_length(len);
                bar.set_position(pos);
                bar.set_message(self.message(t));
            }
            None => {
                if t.item.is_empty() || now - s.last_line >= self.every {
                    s.last_line = now;
                    let line = self.line(t, now - s.start);
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{line}");
                }
            }
        }
    }

    fn new_bar(&self, t: &Tick<'_>) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let rate = if t.bytes_total > 0 {
            "{decimal_bytes_per_sec}"
        } else {
            "{per_sec}"
        };
        let style = ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:30}}] {{msg}} {rate} ETA {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(self.label(t.scope));
        bar
    }

    fn message(&self, t: &Tick<'_>) -> String {
        let mut m = format!("{}/{} {}", t.done, t.total, self.unit);
        if !t.note.is_empty() {
            m.push_str(&format!(" {}", t.note));
        }
        if !t.item.is_empty() {
            let item: String = t.item.chars().take(48).collect();
            m.push_str(&format!(" {item}"));
        }
        m
    }

    fn line(&self, t: &Tick<'_>, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let mut l = format!(
            "{}: {}/{} {}",
            self.label(t.scope),
            t.done,
            t.total,
            self.unit
        );
        let (done, total) = if t.bytes_total > 0 {
            (t.bytes_done, t.bytes_total)
        } else {
            (t.done, t.total)
        };
        if t.bytes_total > 0 {
            l.push_str(&format!(
                ", {} of {}",
                human(t.bytes_done),
                human(t.bytes_total)
            ));
        }
        if let Some(pct) = (done * 100).checked_div(total) {
            l.push_str(&format!(" ({pct}%)"));
        }
        if t.bytes_total > 0 && secs > 0.0 && t.bytes_done > 0 {
            l.push_str(&format!(
                ", {}/s",
                human((t.bytes_done as f64 / secs) as u64)
            ));
        }
        if done > 0 && done < total {
            let eta = secs * (total - done) as f64 / done as f64;
            l.push_str(&format!(", ETA {}", clock(eta)));
        }
        l.push_str(&format!(", {} elapsed", clock(secs)));
        if !t.note.is_empty() {
            l.push_str(&format!(", {}", t.note));
        }
        if !t.item.is_empty() {
            l.push_str(&format!(": {}", t.item));
        }
        l
    }
}

/// Seconds as `1h02m03s`, `2m03s` or `3s`.
fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

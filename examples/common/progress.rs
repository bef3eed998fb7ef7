//! A progress bar on stderr for the long phases (no dependency): redrawn in place at most
//! ten times a second when stderr is a terminal, silent otherwise (logs keep only the
//! final table).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const WIDTH: usize = 30;
const REDRAW: Duration = Duration::from_millis(100);

pub struct Progress {
    label: String,
    total: usize,
    start: Instant,
    last_draw: Option<Instant>,
    tty: bool,
}

impl Progress {
    /// A bar for `total` steps of `label` (e.g. "generate", in tokens).
    pub fn new(label: &str, total: usize) -> Self {
        Progress {
            label: label.into(),
            total,
            start: Instant::now(),
            last_draw: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// `done` of the total steps are complete.
    pub fn set(&mut self, done: usize) {
        let now = Instant::now();
        if !self.tty || self.last_draw.is_some_and(|t| now - t < REDRAW && done < self.total) {
            return;
        }
        self.last_draw = Some(now);
        let filled = (done * WIDTH).checked_div(self.total).unwrap_or(WIDTH).min(WIDTH);
        let secs = (now - self.start).as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(WIDTH - filled));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{} [{bar}] {done}/{} {secs:.1} s, {rate:.1}/s ", self.label, self.total);
        let _ = err.flush();
    }

    /// Clears the bar's line.
    pub fn finish(self) {
        if self.tty && self.last_draw.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\r", " ".repeat(self.label.len() + WIDTH + 48));
            let _ = err.flush();
        }
    }
}

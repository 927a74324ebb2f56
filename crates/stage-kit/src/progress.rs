//! Progress of long loops: a kdam bar (rate and ETA) on a terminal; when stderr is a file
//! (pipeline logs, CI), a log line every few seconds instead of carriage-return redraws.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use kdam::BarExt;

/// Seconds between log lines when stderr is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(15);

/// Progress over `total` units of work (utterances, seconds of audio, steps).
pub struct Progress {
    desc: String,
    unit: String,
    total: usize,
    done: usize,
    started: Instant,
    last_log: Instant,
    bar: Option<kdam::Bar>,
}

impl Progress {
    /// Starts a progress display; `unit` names what is counted (e.g. "utt", "step").
    pub fn new(desc: &str, total: usize, unit: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            kdam::Bar::builder()
                .desc(desc)
                .total(total)
                .unit(unit)
                .unit_scale(true)
                .dynamic_ncols(true)
                .build()
                .expect("valid kdam bar settings")
        });
        let now = Instant::now();
        Self {
            desc: desc.to_owned(),
            unit: unit.to_owned(),
            total,
            done: 0,
            started: now,
            last_log: now,
            bar,
        }
    }

    /// Records `n` more units of finished work.
    pub fn update(&mut self, n: usize) {
        self.done += n;
        match &mut self.bar {
            Some(bar) => {
                let _ = bar.update(n);
            }
            None if self.last_log.elapsed() >= LOG_INTERVAL => {
                self.last_log = Instant::now();
                self.log_line();
            }
            None => {}
        }
    }

    /// Items per second so far.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Closes the display and logs the final count and rate.
    pub fn finish(mut self) {
        if let Some(bar) = &mut self.bar {
            let _ = bar.refresh();
            eprintln!();
        }
        self.log_line();
    }

    fn log_line(&self) {
        let rate = self.rate();
        let eta = (self.total.saturating_sub(self.done)) as f64 / rate.max(1e-9);
        tracing::info!(
            "{}: {}/{} {} ({:.1} {}/s, ETA {:.0} s)",
            self.desc,
            self.done,
            self.total,
            self.unit,
            rate,
            self.unit,
            eta
        );
    }
}

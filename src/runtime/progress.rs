//! Progress display: one line per component on a terminal (rows, rows/s, output queue fill),
//! plain log lines every ten seconds otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::metrics::ComponentMetrics;
use super::spawn::{TaskHandle, spawn};

/// How progress is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing (library default).
    #[default]
    Off,
    /// Bars on a terminal, log lines otherwise.
    Auto,
    /// Log lines every ten seconds.
    Log,
}

/// A running progress display; stops when finished or dropped.
pub struct Progress {
    _task: Option<TaskHandle<()>>,
    bars: Option<(MultiProgress, Vec<ProgressBar>)>,
}

impl Progress {
    /// Stops the display and clears the bars.
    pub fn finish(mut self) {
        if let Some((mp, bars)) = self.bars.take() {
            for b in bars {
                b.finish_and_clear();
            }
            let _ = mp.clear();
        }
    }
}

fn line(m: &ComponentMetrics, secs: f64) -> String {
    let rows = if m.section == "sink" {
        m.rows_in.load(Ordering::Relaxed)
    } else {
        m.rows_out.load(Ordering::Relaxed)
    };
    let rate = if secs > 0.0 { rows as f64 / secs } else { 0.0 };
    let expected = m.rows_expected.load(Ordering::Relaxed);
    let of = if expected > 0 {
        format!("/{expected}")
    } else {
        String::new()
    };
    let cap = m.queue_capacity.load(Ordering::Relaxed);
    let queue = if cap > 0 {
        format!("  queue {}/{cap}", m.queued.load(Ordering::Relaxed).max(0))
    } else {
        String::new()
    };
    let skipped = m.rows_skipped.load(Ordering::Relaxed);
    let skipped = if skipped > 0 {
        format!("  skipped {skipped}")
    } else {
        String::new()
    };
    format!(
        "{:<6} {:<18} {rows}{of} rows  {rate:.0} rows/s{queue}{skipped}",
        m.section, m.name
    )
}

/// Starts the display for `metrics`.
pub fn start(
    mode: ProgressMode,
    metrics: Vec<Arc<ComponentMetrics>>,
    started: Instant,
) -> Progress {
    let tty = std::io::stderr().is_terminal();
    match mode {
        ProgressMode::Off => Progress {
            _task: None,
            bars: None,
        },
        ProgressMode::Auto if tty => {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
            let style = ProgressStyle::with_template("{msg}").expect("valid template");
            let bars: Vec<ProgressBar> = metrics
                .iter()
                .map(|_| mp.add(ProgressBar::new_spinner().with_style(style.clone())))
                .collect();
            let bars2 = bars.clone();
            let task = spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let secs = started.elapsed().as_secs_f64();
                    for (b, m) in bars2.iter().zip(&metrics) {
                        b.set_message(line(m, secs));
                    }
                }
            });
            Progress {
                _task: Some(task),
                bars: Some((mp, bars)),
            }
        }
        ProgressMode::Auto | ProgressMode::Log => {
            let task = spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let secs = started.elapsed().as_secs_f64();
                    for m in &metrics {
                        tracing::info!("[{secs:.0}s] {}", line(m, secs));
                    }
                }
            });
            Progress {
                _task: Some(task),
                bars: None,
            }
        }
    }
}

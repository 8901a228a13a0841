//! Per-component counters, shared between the running components, the progress display and the
//! final summary. One name per concept: the JSON keys equal the field names.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

/// Live counters of one component.
#[derive(Debug)]
pub struct ComponentMetrics {
    /// Component name.
    pub name: String,
    /// `source`, `stage` or `sink`.
    pub section: &'static str,
    /// The component's `type`.
    pub kind: &'static str,
    /// Rows received from upstream.
    pub rows_in: AtomicU64,
    /// Rows emitted (for sinks: rows written).
    pub rows_out: AtomicU64,
    /// Rows dropped under `on_error: skip` (written to the quarantine).
    pub rows_skipped: AtomicU64,
    /// Batches emitted.
    pub batches_out: AtomicU64,
    /// Nanoseconds spent working (decoding, computing, encoding), summed over threads.
    pub busy_ns: AtomicU64,
    /// Rows expected in total, when known up front (sources).
    pub rows_expected: AtomicU64,
    /// Batches waiting in this component's output channels, and their capacity.
    pub queued: AtomicI64,
    /// Total capacity of this component's output channels.
    pub queue_capacity: AtomicU64,
    /// Extra facts a component reports at the end (shards written, execution provider, …).
    pub details: Mutex<serde_json::Map<String, serde_json::Value>>,
}

impl ComponentMetrics {
    /// Fresh counters for a component.
    pub fn new(name: &str, section: &'static str, kind: &'static str) -> Arc<ComponentMetrics> {
        Arc::new(ComponentMetrics {
            name: name.to_string(),
            section,
            kind,
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            rows_skipped: AtomicU64::new(0),
            batches_out: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            rows_expected: AtomicU64::new(0),
            queued: AtomicI64::new(0),
            queue_capacity: AtomicU64::new(0),
            details: Mutex::new(serde_json::Map::new()),
        })
    }

    /// Records a detail for the summary.
    pub fn set_detail(&self, key: &str, value: impl Into<serde_json::Value>) {
        self.details
            .lock()
            .expect("metrics lock")
            .insert(key.to_string(), value.into());
    }

    /// A snapshot for the summary, with `elapsed` seconds of wall time.
    pub fn summary(&self, elapsed: f64) -> ComponentSummary {
        let busy = self.busy_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let rows_out = self.rows_out.load(Ordering::Relaxed);
        let rows_in = self.rows_in.load(Ordering::Relaxed);
        let rows = if self.section == "sink" {
            rows_in.max(rows_out)
        } else {
            rows_out
        };
        ComponentSummary {
            name: self.name.clone(),
            section: self.section,
            kind: self.kind,
            rows_in,
            rows_out,
            rows_skipped: self.rows_skipped.load(Ordering::Relaxed),
            batches_out: self.batches_out.load(Ordering::Relaxed),
            seconds_busy: busy,
            rows_per_second: if elapsed > 0.0 {
                rows as f64 / elapsed
            } else {
                0.0
            },
            details: self.details.lock().expect("metrics lock").clone(),
        }
    }
}

/// What one component did, as printed and written by `--metrics-json`.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentSummary {
    /// Component name.
    pub name: String,
    /// `source`, `stage` or `sink`.
    pub section: &'static str,
    /// The component's `type`.
    pub kind: &'static str,
    /// Rows received.
    pub rows_in: u64,
    /// Rows emitted or written.
    pub rows_out: u64,
    /// Rows skipped to the quarantine.
    pub rows_skipped: u64,
    /// Batches emitted.
    pub batches_out: u64,
    /// Seconds spent working, summed over threads.
    pub seconds_busy: f64,
    /// Rows out per second of the run's wall time.
    pub rows_per_second: f64,
    /// Component-specific facts.
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// tripline version.
    pub tripline_version: &'static str,
    /// Whether the run was interrupted (Ctrl-C / SIGTERM) and drained early.
    pub interrupted: bool,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Per component, sources first.
    pub components: Vec<ComponentSummary>,
    /// Rows written to the quarantine, in total.
    pub rows_quarantined: u64,
    /// The quarantine directory, when anything was written there.
    pub quarantine: Option<String>,
    /// sha256 of the resolved configuration.
    pub config_hash: String,
}

impl RunSummary {
    /// A human-readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<8} {:<20} {:<16} {:>12} {:>12} {:>9} {:>9} {:>12}\n",
            "", "component", "type", "rows in", "rows out", "skipped", "busy s", "rows/s"
        ));
        for c in &self.components {
            out.push_str(&format!(
                "{:<8} {:<20} {:<16} {:>12} {:>12} {:>9} {:>9.2} {:>12.0}\n",
                c.section,
                c.name,
                c.kind,
                c.rows_in,
                c.rows_out,
                c.rows_skipped,
                c.seconds_busy,
                c.rows_per_second
            ));
            for (k, v) in &c.details {
                out.push_str(&format!("{:<8}   {k}: {v}\n", ""));
            }
        }
        out.push_str(&format!(
            "{} in {:.2} s",
            if self.interrupted {
                "interrupted, drained"
            } else {
                "finished"
            },
            self.seconds
        ));
        if let Some(q) = &self.quarantine {
            out.push_str(&format!(
                "; {} rows quarantined in {q}",
                self.rows_quarantined
            ));
        }
        out.push('\n');
        out
    }
}

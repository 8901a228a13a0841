//! The quarantine: where rows skipped under `on_error: skip` go, one JSON line per row, with
//! the reason. Nothing is dropped silently: every skipped row is written here and counted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{Error, Result};

/// Writes quarantined rows to `<dir>/<component>.jsonl`.
#[derive(Debug)]
pub struct Quarantine {
    dir: PathBuf,
    files: Mutex<HashMap<String, BufWriter<File>>>,
    rows: AtomicU64,
}

impl Quarantine {
    /// A quarantine in `dir` (created on first use).
    pub fn new(dir: PathBuf) -> Quarantine {
        Quarantine {
            dir,
            files: Mutex::new(HashMap::new()),
            rows: AtomicU64::new(0),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Writes row `index` of `batch`, which came from `origin` at row `row`, with `reason`.
    ///
    /// # Errors
    /// When the quarantine file cannot be created or written.
    pub fn write(
        &self,
        component: &str,
        origin: &str,
        row: u64,
        batch: &RecordBatch,
        index: usize,
        reason: &str,
    ) -> Result<()> {
        let mut record = serde_json::Map::new();
        let opts = FormatOptions::default().with_null("null");
        for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
            let v = if col.is_null(index) {
                serde_json::Value::Null
            } else {
                match ArrayFormatter::try_new(col.as_ref(), &opts) {
                    Ok(f) => serde_json::Value::String(f.value(index).to_string()),
                    Err(_) => serde_json::Value::String(format!("<{}>", field.data_type())),
                }
            };
            record.insert(field.name().clone(), v);
        }
        let line = serde_json::json!({
            "component": component,
            "origin": origin,
            "row": row,
            "reason": reason,
            "record": record,
        });
        let mut files = self.files.lock().expect("quarantine lock");
        if !files.contains_key(component) {
            std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("creating", &self.dir, e))?;
            let path = self.dir.join(format!("{component}.jsonl"));
            let f = File::create(&path).map_err(|e| Error::io("creating", &path, e))?;
            files.insert(component.to_string(), BufWriter::new(f));
        }
        let w = files.get_mut(component).expect("inserted above");
        serde_json::to_writer(&mut *w, &line)
            .map_err(|e| Error::Other(format!("writing quarantine: {e}")))?;
        w.write_all(b"\n")
            .map_err(|e| Error::io("writing", self.dir.join(component), e))?;
        self.rows.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Flushes every file.
    ///
    /// # Errors
    /// When a flush fails.
    pub fn flush(&self) -> Result<()> {
        for (name, w) in self.files.lock().expect("quarantine lock").iter_mut() {
            w.flush()
                .map_err(|e| Error::io("writing", self.dir.join(format!("{name}.jsonl")), e))?;
        }
        Ok(())
    }
}

//! `tripline inspect`: summarise an output directory and verify it against its manifest.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::sinks::manifest::{self, Manifest};

/// What `inspect` found.
#[derive(Debug)]
pub struct Inspection {
    /// The manifest read.
    pub manifest: Manifest,
    /// One line per problem (missing shard, size, checksum or row count mismatch, stray files).
    pub problems: Vec<String>,
    /// Human-readable report.
    pub report: String,
}

impl Inspection {
    /// Whether every shard verified and the output is complete.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.manifest.complete
    }
}

/// Reads the manifest in `path` (a directory or the manifest file) and verifies every shard:
/// present, same size, same sha256, same row count as its Parquet footer.
///
/// # Errors
/// When there is no readable manifest.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let (dir, m) = manifest::read(path)?;
    let mut problems = Vec::new();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "manifest: {}",
        dir.join(manifest::MANIFEST).display()
    );
    let _ = writeln!(
        report,
        "rows: {}  shards: {}  bytes: {}  compression: {}  complete: {}",
        m.rows,
        m.shards.len(),
        m.bytes,
        m.compression,
        m.complete
    );
    let _ = writeln!(
        report,
        "tripline {}  config {}",
        m.tripline_version, m.config_hash
    );
    let _ = writeln!(report, "schema:");
    for f in &m.schema {
        let _ = writeln!(
            report,
            "  {}: {}{}",
            f.name,
            f.data_type,
            if f.nullable { "" } else { " not null" }
        );
    }
    let _ = writeln!(report, "shards:");
    let mut total = 0u64;
    for s in &m.shards {
        let p = dir.join(&s.file);
        let status = match verify(&p, s.bytes, &s.sha256, s.rows) {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                problems.push(format!("{}: {e}", s.file));
                format!("FAILED: {e}")
            }
        };
        total += s.rows;
        let _ = writeln!(
            report,
            "  {}  rows {}  bytes {}  {status}",
            s.file, s.rows, s.bytes
        );
    }
    if total != m.rows {
        problems.push(format!(
            "the shards hold {total} rows but the manifest says {}",
            m.rows
        ));
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut stray: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        stray.sort();
        for n in stray {
            problems.push(format!(
                "{n}: unfinished temporary file (not part of the output)"
            ));
        }
    }
    if !m.complete {
        let _ = writeln!(
            report,
            "note: the run was interrupted; the shards hold a prefix of the output"
        );
    }
    if problems.is_empty() {
        let _ = writeln!(report, "verified: every shard matches the manifest");
    } else {
        let _ = writeln!(report, "{} problem(s):", problems.len());
        for p in &problems {
            let _ = writeln!(report, "  {p}");
        }
    }
    Ok(Inspection {
        manifest: m,
        problems,
        report,
    })
}

fn verify(path: &Path, bytes: u64, sha256: &str, rows: u64) -> std::result::Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len != bytes {
        return Err(format!("size is {len} bytes, manifest says {bytes}"));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got = hex::encode(h.finalize());
    if got != sha256 {
        return Err(format!("sha256 is {got}, manifest says {sha256}"));
    }
    let reader = SerializedFileReader::new(File::open(path).map_err(|e| e.to_string())?)
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
    let n = reader.metadata().file_metadata().num_rows() as u64;
    if n != rows {
        return Err(format!("footer says {n} rows, manifest says {rows}"));
    }
    Ok(())
}

//! `manifest.json`: the record of a completed set of shards, written last and atomically.
//!
//! A directory holds a valid output exactly when it holds a `manifest.json`; every shard the
//! manifest names was complete (renamed from its temporary name) before the manifest was
//! written, and its size and sha256 are recorded so `tripline inspect` can verify them.

use std::path::Path;

use arrow::datatypes::{DataType, Schema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// The identifier of this manifest format.
pub const FORMAT: &str = "tripline-shards/1";

/// Contents of `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Rows in all shards.
    pub rows: u64,
    /// Bytes in all shards.
    pub bytes: u64,
    /// The shards, in order.
    pub shards: Vec<ShardEntry>,
    /// The Arrow schema of every shard.
    pub schema: Vec<FieldEntry>,
    /// Compression codec used.
    pub compression: String,
    /// Version of tripline that wrote it.
    pub tripline_version: String,
    /// sha256 of the resolved pipeline configuration.
    pub config_hash: String,
    /// `true` when every input was read to the end; `false` when the run was interrupted and
    /// drained (the shards hold a prefix of the output).
    pub complete: bool,
}

/// One shard in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct ShardEntry {
    /// File name relative to the manifest.
    pub file: String,
    /// Rows in the shard.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// sha256 of the file, hex.
    pub sha256: String,
}

/// One column of the schema.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct FieldEntry {
    /// Column name.
    pub name: String,
    /// Arrow data type, as Arrow displays it (`Int64`, `Utf8`, `FixedSizeList(384 x Float32)`).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether nulls are allowed.
    pub nullable: bool,
}

/// The manifest form of an Arrow schema.
pub fn schema_entries(schema: &Schema) -> Vec<FieldEntry> {
    schema
        .fields()
        .iter()
        .map(|f| FieldEntry {
            name: f.name().clone(),
            data_type: type_name(f.data_type()),
            nullable: f.is_nullable(),
        })
        .collect()
}

fn type_name(t: &DataType) -> String {
    t.to_string()
}

/// Reads `dir/manifest.json` (or the manifest file itself).
///
/// # Errors
/// When it is missing or not a manifest.
pub fn read(path: &Path) -> Result<(std::path::PathBuf, Manifest)> {
    let file = if path.is_dir() {
        path.join(MANIFEST)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io("reading", &file, e))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| Error::Input {
        path: file.clone(),
        message: format!("not a tripline manifest: {e}"),
    })?;
    if m.format != FORMAT {
        return Err(Error::Input {
            path: file,
            message: format!(
                "unknown manifest format `{}`, expected `{FORMAT}`",
                m.format
            ),
        });
    }
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((dir, m))
}

/// The JSON Schema of `manifest.json`, as checked in at `schemas/manifest.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Manifest);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serializes");
    s.push('\n');
    s
}

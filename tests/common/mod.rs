//! Helpers shared by the integration tests: deterministic input files and output readers.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, Int64Array, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

/// The schema of the generated documents: id, label, text.
pub fn docs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Int32, false),
        Field::new("text", DataType::Utf8, true),
    ]))
}

/// Deterministic text for row `i` (varied length, some non-ASCII).
pub fn text_for(i: i64) -> String {
    let words = [
        "alpha", "beta", "gamma", "délta", "epsilon", "zeta", "ηta", "theta", "日本", "kappa",
    ];
    let n = 3 + (i % 7) as usize;
    (0..n)
        .map(|k| words[((i as usize) * 7 + k * 3) % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A batch of documents with ids `start..start+n`.
pub fn docs_batch(start: i64, n: usize) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let labels: Vec<i32> = ids.iter().map(|i| (i % 13) as i32).collect();
    let texts: Vec<String> = ids.iter().map(|&i| text_for(i)).collect();
    RecordBatch::try_new(
        docs_schema(),
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(Int32Array::from(labels)),
            Arc::new(StringArray::from(texts)),
        ],
    )
    .unwrap()
}

/// Writes `batches` to a Parquet file with row groups of `row_group_rows`.
pub fn write_parquet(path: &Path, batches: &[RecordBatch], row_group_rows: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let mut w = ArrowWriter::try_new(
        File::create(path).unwrap(),
        batches[0].schema(),
        Some(props),
    )
    .unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

/// Writes `n` generated documents (ids from `start`) to `path`.
pub fn write_docs(path: &Path, start: i64, n: usize, row_group_rows: usize) {
    write_parquet(path, &[docs_batch(start, n)], row_group_rows);
}

/// Reads every Parquet file given, in order, into one batch per file.
pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let r = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    r.map(|b| b.unwrap()).collect()
}

/// Reads all shards of an output directory (in manifest order) into batches.
pub fn read_output(dir: &Path) -> Vec<RecordBatch> {
    let (_, m) = tripline::sinks::manifest::read(dir).unwrap();
    m.shards
        .iter()
        .flat_map(|s| read_parquet(&dir.join(&s.file)))
        .collect()
}

/// The ids (column `id`) of all batches, in order.
pub fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            c.values().to_vec()
        })
        .collect()
}

/// Column `name` as strings, over all batches.
pub fn strings(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            (0..c.len())
                .map(|i| (!c.is_null(i)).then(|| c.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A batch with an id column and a `dim`-float embedding column.
pub fn embedding_batch(start: i64, n: usize, dim: i32) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let values: Vec<f32> = (0..n * dim as usize)
        .map(|k| ((k as f32) * 0.001).sin())
        .collect();
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let emb = FixedSizeListArray::try_new(field, dim, Arc::new(Float32Array::from(values)), None)
        .unwrap();
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("embedding", Arc::new(emb) as ArrayRef),
    ])
    .unwrap()
}

/// A fresh temporary directory.
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// YAML for a parquet → parquet_shards pipeline.
pub fn passthrough_yaml(input: &Path, output: &Path, extra_sink: &str) -> String {
    format!(
        "version: 1\nseed: 7\nsources:\n  docs:\n    type: parquet\n    path: {}\n    batch_rows: 100\nsinks:\n  shards:\n    type: parquet_shards\n    inputs: [docs]\n    path: {}\n{extra_sink}",
        input.display(),
        output.display()
    )
}

/// Path of the built `tripline` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tripline"))
}

/// The project venv's Python (`TRIPLINE_VENV`, default `<repo>/.venv`); fails, naming
/// `scripts/setup-python.sh`, when it cannot `import {modules}`.
pub fn venv_python(modules: &str) -> PathBuf {
    let venv = std::env::var_os("TRIPLINE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let py = venv.join("bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} with {modules} is needed: run scripts/setup-python.sh (or set TRIPLINE_VENV)",
        py.display()
    );
    py
}

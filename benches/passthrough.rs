//! Parquet → Parquet passthrough through the whole engine (source thread, bounded channel,
//! shard writer thread, manifest), on files generated once per run with a fixed seed.
//!
//! Groups:
//! * `passthrough/text` — 1M rows of (int64 id, int32 label, ~100-byte text): decoding,
//!   channel hand-off and zstd encoding of string data.
//! * `passthrough/embeddings` — 100k rows of (int64 id, 384 × f32 embedding): fixed-size list
//!   decoding and encoding, ~150 MB of floats.
//!
//! Run: `cargo bench --bench passthrough`. The peer comparison (pyarrow read + write of the
//! same files, same run, printed ratio) is `scripts/bench-passthrough.py`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int32Array, Int64Array, StringArray,
};
use arrow::datatypes::{DataType, Field};
use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parquet::arrow::ArrowWriter;
use rand::{RngExt, SeedableRng};
use tripline::{Pipeline, RunOptions};

const WORDS: [&str; 16] = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "retrieval",
    "ranking",
    "triplet",
    "negative",
    "anchor",
    "positive",
    "embedding",
    "vector",
];

fn write(path: &Path, batches: impl Iterator<Item = RecordBatch>) {
    let mut w: Option<ArrowWriter<std::fs::File>> = None;
    for b in batches {
        let w = w.get_or_insert_with(|| {
            ArrowWriter::try_new(std::fs::File::create(path).unwrap(), b.schema(), None).unwrap()
        });
        w.write(&b).unwrap();
    }
    w.unwrap().close().unwrap();
}

fn text_file(path: &Path, rows: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    write(
        path,
        (0..rows).step_by(100_000).map(|start| {
            let n = 100_000.min(rows - start);
            let texts: Vec<String> = (0..n)
                .map(|_| {
                    (0..16)
                        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            RecordBatch::try_from_iter(vec![
                (
                    "id",
                    Arc::new(Int64Array::from_iter_values(
                        start as i64..(start + n) as i64,
                    )) as ArrayRef,
                ),
                (
                    "label",
                    Arc::new(Int32Array::from_iter_values(
                        (0..n).map(|_| rng.random_range(0..1000)),
                    )),
                ),
                ("text", Arc::new(StringArray::from(texts))),
            ])
            .unwrap()
        }),
    );
}

fn embedding_file(path: &Path, rows: usize, dim: i32) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    write(
        path,
        (0..rows).step_by(20_000).map(|start| {
            let n = 20_000.min(rows - start);
            let values: Vec<f32> = (0..n * dim as usize)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let item = Arc::new(Field::new("item", DataType::Float32, false));
            let emb =
                FixedSizeListArray::try_new(item, dim, Arc::new(Float32Array::from(values)), None)
                    .unwrap();
            RecordBatch::try_from_iter(vec![
                (
                    "id",
                    Arc::new(Int64Array::from_iter_values(
                        start as i64..(start + n) as i64,
                    )) as ArrayRef,
                ),
                ("embedding", Arc::new(emb) as ArrayRef),
            ])
            .unwrap()
        }),
    );
}

fn run(input: &Path, out: &Path) {
    let yaml = format!(
        "version: 1\nsources:\n  docs: {{type: parquet, path: {}, batch_rows: 8192}}\nsinks:\n  shards: {{type: parquet_shards, inputs: [docs], path: {}, rows_per_shard: 100000000}}\n",
        input.display(),
        out.display()
    );
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    p.run_blocking(RunOptions {
        overwrite: true,
        ..Default::default()
    })
    .unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.parquet");
    let emb = dir.path().join("emb.parquet");
    text_file(&text, 1_000_000);
    embedding_file(&emb, 100_000, 384);
    let out = dir.path().join("out");

    let mut g = c.benchmark_group("passthrough");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("text", |b| b.iter(|| run(&text, &out)));
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("embeddings", |b| b.iter(|| run(&emb, &out)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Benchmarks of the `embed` stage on the quickstart model (all-MiniLM-L6-v2, CPU).
//!
//! Groups, each with throughput in rows (sentences):
//!
//! * `embed_tokenise` — tokenisation alone (`TextEncoder::encode`, no padding, truncation at
//!   128) of the first 1024 verses of the bundled sample: the part of the stage that is not
//!   ONNX Runtime.
//! * `embed_stage` — the whole stage through the public API (Parquet source → embed → a sink
//!   that drops batches), 1024 verses, `batch_size: 64`, with `lookahead_rows: 64` (each model
//!   batch is one input batch: no cross-batch length sorting) and `lookahead_rows: 1024`
//!   (sorted within the window, the default): the difference is what padding costs. Each
//!   iteration includes creating the session (about 0.2 s).
//!
//! Run: `cargo bench --bench embed` (needs scripts/fetch-model.sh, scripts/setup-python.sh
//! and data/sample/verses.parquet). The peer comparison (Python onnxruntime,
//! sentence-transformers) is `scripts/bench-embed.py`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tripline::runtime::CustomSink;
use tripline::stages::embed::text::TextEncoder;
use tripline::{Pipeline, RunOptions};

const ROWS: usize = 1024;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_dir() -> PathBuf {
    std::env::var_os("TRIPLINE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models"))
        .join("all-MiniLM-L6-v2")
}

/// The first `ROWS` verses (id, text), written to `dir/in.parquet`; returns the texts.
fn sample(dir: &std::path::Path) -> Vec<String> {
    let path = repo().join("data/sample/verses.parquet");
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/make-sample.sh)", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .with_batch_size(ROWS)
        .build()
        .unwrap();
    let batch = reader.into_iter().next().unwrap().unwrap();
    let schema = batch.schema();
    let keep: Vec<usize> = ["id", "text"]
        .iter()
        .map(|c| schema.index_of(c).unwrap())
        .collect();
    let batch = batch.project(&keep).unwrap();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(dir.join("in.parquet")).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let texts = batch.column(1);
    let texts = arrow::array::AsArray::as_string::<i32>(texts.as_ref());
    texts.iter().map(|t| t.unwrap_or("").to_string()).collect()
}

fn tokenise(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let texts = sample(dir.path());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let enc = TextEncoder::load(&model_dir().join("tokenizer.json"), Some(128)).unwrap();
    let mut g = c.benchmark_group("embed_tokenise");
    g.throughput(Throughput::Elements(refs.len() as u64));
    g.bench_function("minilm_tokenizer_1024_verses", |b| {
        b.iter(|| enc.encode(&refs).unwrap())
    });
    g.finish();
}

fn stage(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let m = model_dir();
    let yaml = |lookahead: usize| {
        format!(
            "version: 1\nsources:\n  verses:\n    type: parquet\n    path: {}\n    batch_rows: 64\n\
             stages:\n  embed:\n    type: embed\n    inputs: [verses]\n    model: {}\n    \
             tokenizer: {}\n    columns: [text]\n    device: cpu\n    batch_size: 64\n    \
             max_length: 128\n    lookahead_rows: {lookahead}\n\
             sinks:\n  drop:\n    type: parquet_shards\n    inputs: [embed]\n    path: {}\n",
            dir.path().join("in.parquet").display(),
            m.join("model.onnx").display(),
            m.join("tokenizer.json").display(),
            dir.path().join("unused").display()
        )
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut g = c.benchmark_group("embed_stage");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(ROWS as u64));
    for lookahead in [64, 1024] {
        let pipeline = Pipeline::from_yaml(&yaml(lookahead), &[]).unwrap();
        g.bench_function(format!("minilm_cpu_batch64_lookahead{lookahead}"), |b| {
            b.iter(|| {
                let sink: CustomSink = Box::new(|mut s| {
                    Box::pin(async move {
                        while let Some(b) = s.next().await {
                            b?;
                        }
                        Ok(())
                    })
                });
                let opts = RunOptions {
                    sinks: HashMap::from([("drop".to_string(), sink)]),
                    ..RunOptions::default()
                };
                runtime.block_on(pipeline.run(opts)).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, tokenise, stage);
criterion_main!(benches);

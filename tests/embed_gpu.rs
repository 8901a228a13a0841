//! CUDA execution provider parity and throughput, for a machine with an NVIDIA GPU.
//!
//! Ignored by default (it needs a GPU and the `onnxruntime-gpu` library); run it with
//! `scripts/gpu-check.sh`, which builds this test, points `ORT_DYLIB_PATH` at the GPU build of
//! ONNX Runtime and runs `embed_gpu -- --ignored --nocapture`.
//!
//! It embeds the first `TRIPLINE_GPU_ROWS` (default 4096) verses of the bundled sample on
//! `device: cuda` and on `device: cpu`, requires the CUDA run to report
//! `CUDAExecutionProvider`, requires every row's cosine between the two to be ≥ 0.9999, and
//! prints both throughputs.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Float32Type;
use futures::StreamExt;
use tripline::runtime::CustomSink;
use tripline::{Pipeline, RunOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Embeds the sample on `device`; returns the vectors, seconds and the embed stage's details.
fn embed(
    device: &str,
    rows: usize,
) -> (
    Vec<Vec<f32>>,
    f64,
    serde_json::Map<String, serde_json::Value>,
) {
    let models = std::env::var_os("TRIPLINE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models"))
        .join("all-MiniLM-L6-v2");
    let sample = std::env::var_os("TRIPLINE_GPU_SAMPLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("data/sample/verses.parquet"));
    let yaml = format!(
        "version: 1\nsources:\n  verses:\n    type: parquet\n    path: {}\n    columns: [id, text]\n    \
         batch_rows: 1024\nstages:\n  embed:\n    type: embed\n    inputs: [verses]\n    model: {}\n    \
         tokenizer: {}\n    columns: [text]\n    device: {device}\n    batch_size: 256\n    \
         max_length: 128\n    lookahead_rows: 4096\nsinks:\n  out:\n    type: parquet_shards\n    \
         inputs: [embed]\n    path: {}\n",
        sample.display(),
        models.join("model.onnx").display(),
        models.join("tokenizer.json").display(),
        std::env::temp_dir()
            .join("tripline-gpu-check-unused")
            .display(),
    );
    let got: Arc<Mutex<Vec<Vec<f32>>>> = Arc::default();
    let sink_got = got.clone();
    let sink: CustomSink = Box::new(move |mut s| {
        Box::pin(async move {
            while let Some(b) = s.next().await {
                let b = b?;
                let l = b
                    .data
                    .column_by_name("text_embedding")
                    .unwrap()
                    .as_fixed_size_list();
                let mut v = sink_got.lock().unwrap();
                for i in 0..l.len() {
                    if v.len() < rows {
                        v.push(l.value(i).as_primitive::<Float32Type>().values().to_vec());
                    }
                }
            }
            Ok(())
        })
    });
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let summary = p
        .run_blocking(RunOptions {
            sinks: HashMap::from([("out".to_string(), sink)]),
            ..RunOptions::default()
        })
        .unwrap_or_else(|e| panic!("device {device}: {e}"));
    let secs = t.elapsed().as_secs_f64();
    let details = summary
        .components
        .iter()
        .find(|c| c.name == "embed")
        .unwrap()
        .details
        .clone();
    let v = std::mem::take(&mut *got.lock().unwrap());
    (v, secs, details)
}

#[test]
#[ignore = "needs an NVIDIA GPU and onnxruntime-gpu; run scripts/gpu-check.sh"]
fn cuda_matches_cpu_and_reports_its_throughput() {
    let rows: usize = std::env::var("TRIPLINE_GPU_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    // The first run on the GPU pays for CUDA start-up; time a second one.
    let (_, warm_secs, _) = embed("cuda", rows);
    let (gpu, gpu_secs, details) = embed("cuda", rows);
    assert_eq!(
        details["execution_provider"], "CUDAExecutionProvider",
        "{details:?}"
    );
    let (cpu, cpu_secs, cpu_details) = embed("cpu", rows);
    assert_eq!(cpu_details["execution_provider"], "CPUExecutionProvider");
    assert_eq!(gpu.len(), cpu.len());
    let mut worst = 1.0f64;
    for (a, b) in gpu.iter().zip(&cpu) {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        worst = worst.min(dot / (na * nb));
    }
    let n = gpu.len() as f64;
    println!("gpu-check: rows {}", gpu.len());
    println!(
        "gpu-check: device {} ({})",
        details["device"], details["execution_provider"]
    );
    println!("gpu-check: min cosine(cuda, cpu) = {worst:.7}");
    println!(
        "gpu-check: cuda {:.0} sentences/s ({gpu_secs:.2} s; first run {warm_secs:.2} s), \
         cpu {:.0} sentences/s ({cpu_secs:.2} s), whole pipeline incl. session creation",
        n / gpu_secs,
        n / cpu_secs
    );
    assert!(worst >= 0.9999, "min cosine {worst}");
}

//! The `embed` stage end to end, through the public API.
//!
//! Parity with independent runs: embeddings equal Python onnxruntime's on the quickstart model
//! (reference produced by `scripts/reference-embeddings.py`, checked in under
//! `tests/data/embed/`), token ids equal Python `tokenizers`' on tricky strings. Exact cases on
//! tiny hand-built ONNX models (pooling, vectors, images), batching invariance, worker-count
//! invariance, and every bad input named in the stage's contract. The int8-compute model
//! (`scripts/quantize-model.py`) against Python onnxruntime on the same batches (run at test
//! time: its vectors depend on their batch-mates and on the CPU's int8 kernels), across worker
//! counts, and against the quickstart model.
//!
//! Needs the quickstart model (`scripts/fetch-model.sh`; `TRIPLINE_MODELS_DIR` overrides
//! `<repo>/models`), the int8-compute model derived from it (`scripts/quantize-model.py`), the
//! project venv (`scripts/setup-python.sh`) and the ONNX Runtime library (the venv's, or
//! `scripts/install-onnxruntime.sh`); a test fails, saying which script to run, when one is
//! missing. `scripts/test.sh` runs all of them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, FixedSizeListArray, Float32Array, Int64Array, ListArray,
    StringArray,
};
use arrow::datatypes::{DataType, Field, Float32Type, Schema};
use arrow::record_batch::RecordBatch;
use common::*;
use tripline::runtime::metrics::RunSummary;
use tripline::stages::embed::text::TextEncoder;
use tripline::{Pipeline, RunOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> PathBuf {
    repo().join("tests/data/embed").join(name)
}

/// A model folder under `TRIPLINE_MODELS_DIR` (default `<repo>/models`); fails naming `script`
/// when its model.onnx or tokenizer.json is missing.
fn model_dir(name: &str, script: &str) -> PathBuf {
    let models = std::env::var_os("TRIPLINE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models"));
    let dir = models.join(name);
    for f in ["model.onnx", "tokenizer.json"] {
        assert!(
            dir.join(f).is_file(),
            "{} is missing: run {script} (or set TRIPLINE_MODELS_DIR)",
            dir.join(f).display()
        );
    }
    dir
}

/// The quickstart model's folder.
fn minilm() -> PathBuf {
    model_dir("all-MiniLM-L6-v2", "scripts/fetch-model.sh")
}

/// The int8-compute model derived from the quickstart model.
fn minilm_int8() -> PathBuf {
    model_dir(
        "all-MiniLM-L6-v2-int8",
        "scripts/fetch-model.sh, then .venv/bin/python scripts/quantize-model.py",
    )
}

/// The lowest cosine the int8-compute model may have with the quickstart model
/// (`MIN_COSINE` of scripts/quantize-model.py).
const INT8_MIN_COSINE: f32 = 0.98;

/// Fails with the script to run when ONNX Runtime cannot be found.
fn require_ort() {
    if let Err(e) = tripline::stages::embed::ort_env::locate_library() {
        panic!("{e}");
    }
}

fn text_batch(texts: &[Option<&str>]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..texts.len() as i64)) as ArrayRef,
            Arc::new(StringArray::from(texts.to_vec())),
        ],
    )
    .unwrap()
}

struct Run {
    out: Vec<RecordBatch>,
    summary: RunSummary,
    dir: tempfile::TempDir,
}

impl Run {
    fn detail(&self, key: &str) -> serde_json::Value {
        let c = self
            .summary
            .components
            .iter()
            .find(|c| c.name == "embed")
            .unwrap();
        c.details.get(key).cloned().unwrap_or_default()
    }

    fn skipped(&self) -> u64 {
        self.summary
            .components
            .iter()
            .find(|c| c.name == "embed")
            .unwrap()
            .rows_skipped
    }

    fn quarantine(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out/quarantine/embed.jsonl"))
            .unwrap_or_default()
    }
}

fn pipeline_yaml(input: &Path, out: &Path, batch_rows: usize, stage: &str) -> String {
    format!(
        "version: 1\nsources:\n  docs:\n    type: parquet\n    path: {}\n    batch_rows: {batch_rows}\n\
         stages:\n  embed:\n    type: embed\n    inputs: [docs]\n{stage}\n\
         sinks:\n  shards:\n    type: parquet_shards\n    inputs: [embed]\n    path: {}\n",
        input.display(),
        out.display()
    )
}

/// Runs `source (batches) → embed (stage yaml, indented 4) → parquet_shards`.
fn try_run(
    batches: &[RecordBatch],
    batch_rows: usize,
    stage: &str,
) -> Result<Run, (tripline::Error, tempfile::TempDir)> {
    let dir = tmp();
    let input = dir.path().join("in.parquet");
    write_parquet(&input, batches, 10_000);
    let out = dir.path().join("out");
    let yaml = pipeline_yaml(&input, &out, batch_rows, stage);
    let result =
        Pipeline::from_yaml(&yaml, &[]).and_then(|p| p.run_blocking(RunOptions::default()));
    match result {
        Ok(summary) => Ok(Run {
            out: read_output(&out),
            summary,
            dir,
        }),
        Err(e) => Err((e, dir)),
    }
}

fn run(batches: &[RecordBatch], batch_rows: usize, stage: &str) -> Run {
    require_ort();
    try_run(batches, batch_rows, stage).unwrap_or_else(|(e, _)| panic!("{e}"))
}

fn run_err(batches: &[RecordBatch], stage: &str) -> String {
    match try_run(batches, 100, stage) {
        Ok(_) => panic!("expected an error"),
        Err((e, _)) => e.to_string(),
    }
}

/// The stage for the text model in folder `m`.
fn text_stage(m: &Path, extra: &str) -> String {
    format!(
        "    model: {}\n    tokenizer: {}\n    columns: [text]\n    device: cpu\n{extra}",
        m.join("model.onnx").display(),
        m.join("tokenizer.json").display()
    )
}

fn minilm_stage(extra: &str) -> String {
    text_stage(&minilm(), extra)
}

/// `rows × dim` values of the embedding column `name`, in output order.
fn vectors(batches: &[RecordBatch], name: &str) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(name).expect("embedding column");
        let l = col.as_fixed_size_list();
        for i in 0..l.len() {
            out.push(l.value(i).as_primitive::<Float32Type>().values().to_vec());
        }
    }
    out
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// Rows of `dim` little-endian f32 values.
fn read_f32_rows(path: &Path, dim: usize) -> Vec<Vec<f32>> {
    let raw = std::fs::read(path).unwrap();
    let floats: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    floats.chunks(dim).map(|c| c.to_vec()).collect()
}

fn reference() -> (serde_json::Value, Vec<Vec<f32>>) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("reference.json")).unwrap()).unwrap();
    let dim = meta["dim"].as_u64().unwrap() as usize;
    let rows = read_f32_rows(&data("reference.f32"), dim);
    (meta, rows)
}

/// Python onnxruntime's vectors of the reference sentences with the model in `m`, in batches of
/// the reference's size cut in input order or, with `length_sorted`, from the sentences sorted
/// by token count (`scripts/reference-embeddings.py --vectors`).
fn python_vectors(m: &Path, length_sorted: bool) -> Vec<Vec<f32>> {
    let d = tmp();
    let out = d.path().join("vectors.f32");
    let mut cmd = std::process::Command::new(venv_python("onnxruntime, tokenizers"));
    cmd.arg(repo().join("scripts/reference-embeddings.py"))
        .arg("--vectors")
        .arg(&out)
        .arg("--model-dir")
        .arg(m);
    if length_sorted {
        cmd.arg("--length-sorted");
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    read_f32_rows(&out, 384)
}

fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>())
        .fold(f32::INFINITY, f32::min)
}

fn reference_sentences(meta: &serde_json::Value) -> Vec<String> {
    meta["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn embeddings_equal_python_onnxruntime() {
    let (meta, want) = reference();
    let sentences = reference_sentences(&meta);
    let texts: Vec<Option<&str>> = sentences.iter().map(|s| Some(s.as_str())).collect();
    // Input batches of 7 rows, model batches of the reference's size: tripline sorts by length,
    // so its model batches differ from the reference's; the vectors must not.
    let r = run(
        &[text_batch(&texts)],
        7,
        &minilm_stage(&format!(
            "    batch_size: {}\n    max_length: {}\n",
            meta["batch_size"], meta["max_length"]
        )),
    );
    let got = vectors(&r.out, "text_embedding");
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-5, "max |tripline - onnxruntime| = {diff}");
    assert_eq!(ids(&r.out), (0..sentences.len() as i64).collect::<Vec<_>>());
    assert_eq!(r.detail("execution_provider"), "CPUExecutionProvider");
    assert_eq!(r.detail("device"), "cpu");
    // Sorting by length must have saved padding on these mixed-length sentences.
    let padded = r.detail("padding_tokens").as_u64().unwrap();
    let unsorted = r.detail("padding_tokens_unsorted").as_u64().unwrap();
    assert!(padded < unsorted, "{padded} vs {unsorted}");
}

#[test]
fn token_ids_equal_python_tokenizers_on_tricky_strings() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("tokens.json")).unwrap()).unwrap();
    let tok = minilm().join("tokenizer.json");
    let mut checked = 0;
    for max_length in [128usize, 512] {
        let enc = TextEncoder::load(&tok, Some(max_length)).unwrap();
        let mine: Vec<&serde_json::Value> = cases["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["max_length"].as_u64() == Some(max_length as u64))
            .collect();
        let texts: Vec<&str> = mine.iter().map(|c| c["text"].as_str().unwrap()).collect();
        let got = enc.encode(&texts).unwrap();
        for (c, g) in mine.iter().zip(&got) {
            let ids: Vec<u32> = serde_json::from_value(c["ids"].clone()).unwrap();
            let types: Vec<u32> = serde_json::from_value(c["type_ids"].clone()).unwrap();
            assert_eq!(
                g.ids, ids,
                "ids of {:?} at max_length {max_length}",
                c["text"]
            );
            assert_eq!(g.type_ids, types);
            assert_eq!(g.truncated, c["truncated"].as_bool().unwrap());
            assert!(g.ids.len() <= max_length);
            checked += 1;
        }
    }
    assert_eq!(checked, cases["cases"].as_array().unwrap().len());
}

#[test]
fn padding_does_not_change_a_sentence_embedding() {
    let (meta, _) = reference();
    let sentences = reference_sentences(&meta);
    let texts: Vec<Option<&str>> = sentences.iter().map(|s| Some(s.as_str())).collect();
    let one = run(
        &[text_batch(&texts)],
        100,
        &minilm_stage("    batch_size: 1\n"),
    );
    let many = run(
        &[text_batch(&texts)],
        100,
        &minilm_stage("    batch_size: 32\n"),
    );
    let a = vectors(&one.out, "text_embedding");
    let b = vectors(&many.out, "text_embedding");
    let diff = max_abs_diff(&a, &b);
    assert!(diff <= 1e-5, "batched vs one at a time: {diff}");
    // One at a time pads nothing.
    assert_eq!(one.detail("padding_tokens"), 0);
    assert!(many.detail("padding_tokens").as_u64().unwrap() > 0);
}

/// 300 rows through the model in folder `m` with 1 and 2 workers: the same output, in order.
fn assert_same_output_for_one_or_two_workers(m: &Path) {
    let texts: Vec<String> = (0..300).map(text_for).collect();
    let texts: Vec<Option<&str>> = texts.iter().map(|s| Some(s.as_str())).collect();
    let stage = |w: usize| {
        text_stage(
            m,
            &format!(
                "    batch_size: 16\n    workers: {w}\n    threads: 1\n    lookahead_rows: 64\n"
            ),
        )
    };
    let a = run(&[text_batch(&texts)], 50, &stage(1));
    let b = run(&[text_batch(&texts)], 50, &stage(2));
    assert_eq!(ids(&a.out), (0..300).collect::<Vec<_>>());
    assert_eq!(a.out, b.out);
}

#[test]
fn output_is_identical_for_one_or_two_workers_and_keeps_order() {
    assert_same_output_for_one_or_two_workers(&minilm());
}

#[test]
fn int8_model_output_is_identical_for_one_or_two_workers() {
    // Its vectors depend on their batch-mates, so this also checks that the model batches do
    // not depend on the worker count.
    assert_same_output_for_one_or_two_workers(&minilm_int8());
}

/// The reference sentences through the int8-compute model: one input batch, so one look-ahead
/// window, cut into length-sorted model batches of the reference's batch size.
fn int8_reference_run(meta: &serde_json::Value) -> Vec<Vec<f32>> {
    let sentences = reference_sentences(meta);
    let texts: Vec<Option<&str>> = sentences.iter().map(|s| Some(s.as_str())).collect();
    let r = run(
        &[text_batch(&texts)],
        100,
        &text_stage(
            &minilm_int8(),
            &format!(
                "    batch_size: {}\n    max_length: {}\n    lookahead_rows: 100\n",
                meta["batch_size"], meta["max_length"]
            ),
        ),
    );
    assert_eq!(ids(&r.out), (0..sentences.len() as i64).collect::<Vec<_>>());
    vectors(&r.out, "text_embedding")
}

#[test]
fn int8_model_embeddings_equal_python_onnxruntime_on_the_same_batches() {
    let (meta, _) = reference();
    let got = int8_reference_run(&meta);
    let m = minilm_int8();
    let want = python_vectors(&m, true);
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-5, "max |tripline - onnxruntime| = {diff}");
    // The comparison needs the same batches: other batch-mates give other vectors.
    let other = max_abs_diff(&got, &python_vectors(&m, false));
    assert!(other > 1e-4, "input-order batches: {other}");
}

/// The first `n` verses (`text`) of the bundled sample, with ids.
fn sample_verses(n: usize) -> RecordBatch {
    let path = repo().join("data/sample/verses.parquet");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/make-sample.sh",
        path.display()
    );
    let texts = strings(&read_parquet(&path), "text");
    let texts: Vec<Option<&str>> = texts[..n].iter().map(|t| t.as_deref()).collect();
    text_batch(&texts)
}

#[test]
fn int8_model_stays_close_to_the_quickstart_model() {
    // The quickstart model computes in fp32 (its int8 weights are scaled back to float); the
    // threshold is the one scripts/quantize-model.py --check applies, on the same verses.
    let input = [sample_verses(512)];
    let stage = "    batch_size: 64\n    max_length: 128\n";
    let fp32 = vectors(
        &run(&input, 1024, &minilm_stage(stage)).out,
        "text_embedding",
    );
    let int8 = vectors(
        &run(&input, 1024, &text_stage(&minilm_int8(), stage)).out,
        "text_embedding",
    );
    let cos = min_cosine(&int8, &fp32);
    assert!(
        cos >= INT8_MIN_COSINE,
        "min cosine {cos} < {INT8_MIN_COSINE}"
    );
    // It is another model, not the quickstart one again.
    assert!(max_abs_diff(&int8, &fp32) > 1e-3);
}

#[test]
fn pooling_mean_cls_and_normalisation_on_a_tiny_model() {
    // tiny_text.onnx: last_hidden_state[b, s, :] = input_ids[b, s] · [1, 2, -1, 0.5]
    // (+ token type, 0 here), so pooling is computable from the token ids by hand.
    require_ort();
    let tok = minilm().join("tokenizer.json");
    let texts = [
        "short",
        "a somewhat longer sentence here",
        "mid length text",
    ];
    let enc = TextEncoder::load(&tok, Some(128)).unwrap();
    let encoded = enc.encode(&texts).unwrap();
    let w = [1.0f32, 2.0, -1.0, 0.5];
    let stage = |pooling: &str, normalize: bool| {
        format!(
            "    model: {}\n    tokenizer: {}\n    columns: [text]\n    device: cpu\n    \
             batch_size: 2\n    pooling: {pooling}\n    normalize: {normalize}\n",
            data("tiny_text.onnx").display(),
            tok.display()
        )
    };
    let input = text_batch(&texts.map(Some));
    let mean = vectors(
        &run(std::slice::from_ref(&input), 10, &stage("mean", false)).out,
        "text_embedding",
    );
    let cls = vectors(
        &run(std::slice::from_ref(&input), 10, &stage("cls", false)).out,
        "text_embedding",
    );
    let unit = vectors(
        &run(&[input], 10, &stage("mean", true)).out,
        "text_embedding",
    );
    let norm_w = w.iter().map(|x| x * x).sum::<f32>().sqrt();
    for (i, e) in encoded.iter().enumerate() {
        let m = e.ids.iter().map(|&x| x as f64).sum::<f64>() / e.ids.len() as f64;
        for k in 0..4 {
            let want = (m * w[k] as f64) as f32;
            assert!(
                (mean[i][k] - want).abs() <= 1e-3 * want.abs().max(1.0),
                "mean {i},{k}"
            );
            assert_eq!(cls[i][k], e.ids[0] as f32 * w[k], "cls {i},{k}");
            assert!(
                (unit[i][k] - w[k] / norm_w).abs() < 1e-6,
                "normalised {i},{k}"
            );
        }
    }
}

fn vector_batch_fixed(rows: &[[f32; 3]]) -> RecordBatch {
    let values = Float32Array::from(rows.iter().flatten().copied().collect::<Vec<_>>());
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::try_new(item.clone(), 3, Arc::new(values), None).unwrap();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("vec", DataType::FixedSizeList(item, 3), true),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows.len() as i64)) as ArrayRef,
            Arc::new(list),
        ],
    )
    .unwrap()
}

fn tiny_vector_stage(extra: &str) -> String {
    format!(
        "    model: {}\n    columns: [vec]\n    device: cpu\n    pooling: none\n    batch_size: 2\n{extra}",
        data("tiny_vector.onnx").display()
    )
}

/// y = x · [[1, 0], [0, 2], [1, -1]].
fn tiny_vector_model(x: [f32; 3]) -> Vec<f32> {
    vec![x[0] + x[2], 2.0 * x[1] - x[2]]
}

#[test]
fn vectors_pass_straight_in() {
    let rows = [
        [1.0, 2.0, 3.0],
        [0.5, -1.0, 4.0],
        [0.0, 0.0, 1.0],
        [2.0, 2.0, 2.0],
        [3.0, 0.0, -3.0],
    ];
    let r = run(
        &[vector_batch_fixed(&rows)],
        2,
        &tiny_vector_stage("    normalize: false\n"),
    );
    let got = vectors(&r.out, "vec_embedding");
    let want: Vec<Vec<f32>> = rows.iter().map(|x| tiny_vector_model(*x)).collect();
    assert_eq!(got, want);

    // The same as List<Float32>, normalised.
    let list = ListArray::from_iter_primitive::<Float32Type, _, _>(
        rows.iter()
            .map(|r| Some(r.iter().map(|v| Some(*v)).collect::<Vec<_>>())),
    );
    let b = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "vec",
            list.data_type().clone(),
            true,
        )])),
        vec![Arc::new(list) as ArrayRef],
    )
    .unwrap();
    let r = run(&[b], 10, &tiny_vector_stage(""));
    let got = vectors(&r.out, "vec_embedding");
    for (g, w) in got.iter().zip(&want) {
        let n = (w[0] * w[0] + w[1] * w[1]).sqrt();
        assert!((g[0] - w[0] / n).abs() < 1e-6 && (g[1] - w[1] / n).abs() < 1e-6);
    }
}

#[test]
fn nan_in_a_vector_follows_on_error() {
    let rows = [[1.0, 2.0, 3.0], [f32::NAN, 0.0, 0.0], [0.0, 0.0, 1.0]];
    let e = run_err(&[vector_batch_fixed(&rows)], &tiny_vector_stage(""));
    assert!(e.contains("row 1") && e.contains("non-finite"), "{e}");
    let r = run(
        &[vector_batch_fixed(&rows)],
        10,
        &tiny_vector_stage("    on_error: skip\n"),
    );
    assert_eq!(ids(&r.out), vec![0, 2]);
    assert_eq!(r.skipped(), 1);
    let q = r.quarantine();
    assert!(
        q.contains("column `vec` holds a non-finite value (NaN) at position 0"),
        "{q}"
    );
}

fn png(rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(20, 12, image::Rgb(rgb));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn images_are_decoded_resized_and_normalised() {
    let imgs: Vec<Option<Vec<u8>>> = vec![
        Some(png([255, 0, 51])),
        Some(b"definitely not an image".to_vec()),
        Some(png([0, 255, 102])),
        None,
    ];
    let col = BinaryArray::from(imgs.iter().map(|v| v.as_deref()).collect::<Vec<_>>());
    let b = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("img", DataType::Binary, true),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(0..4)) as ArrayRef,
            Arc::new(col),
        ],
    )
    .unwrap();
    let stage = format!(
        "    model: {}\n    columns: [img]\n    device: cpu\n    pooling: none\n    normalize: false\n    \
         on_error: skip\n    image: {{mean: [0.5, 0.5, 0.5], std: [0.5, 0.25, 0.1]}}\n",
        data("tiny_image.onnx").display()
    );
    let r = run(&[b], 10, &stage);
    assert_eq!(ids(&r.out), vec![0, 2]);
    let got = vectors(&r.out, "img_embedding");
    // tiny_image.onnx averages each channel: a uniform image gives (v/255 - mean) / std.
    let want = |c: [u8; 3]| -> Vec<f32> {
        let std = [0.5, 0.25, 0.1];
        (0..3)
            .map(|k| (c[k] as f32 / 255.0 - 0.5) / std[k])
            .collect()
    };
    for (g, w) in got.iter().zip([want([255, 0, 51]), want([0, 255, 102])]) {
        for k in 0..3 {
            assert!((g[k] - w[k]).abs() < 1e-4, "{g:?} vs {w:?}");
        }
    }
    assert_eq!(r.skipped(), 2);
    let q = r.quarantine();
    assert!(q.contains("holds an unusable image: cannot decode"), "{q}");
    assert!(q.contains("column `img` is null"), "{q}");
}

#[test]
fn empty_text_fails_naming_the_row_or_is_skipped() {
    let texts = [Some("fine"), Some("   "), Some("also fine"), None];
    let e = run_err(&[text_batch(&texts)], &minilm_stage(""));
    assert!(
        e.contains("row 1") && e.contains("column `text` is empty"),
        "{e}"
    );
    let r = run(
        &[text_batch(&texts)],
        10,
        &minilm_stage("    on_error: skip\n"),
    );
    assert_eq!(ids(&r.out), vec![0, 2]);
    assert_eq!(r.skipped(), 2);
    let q = r.quarantine();
    assert!(
        q.contains("column `text` is empty") && q.contains("column `text` is null"),
        "{q}"
    );
    assert_eq!(q.lines().count(), 2);
}

#[test]
fn long_texts_are_truncated_and_counted() {
    let long = "word ".repeat(500);
    let texts = [Some("short"), Some(long.as_str()), Some(long.as_str())];
    let r = run(
        &[text_batch(&texts)],
        10,
        &minilm_stage("    max_length: 32\n"),
    );
    assert_eq!(r.detail("rows_truncated"), 2);
    assert_eq!(ids(&r.out), vec![0, 1, 2]);
    // Truncated at 32 tokens, both long rows embed the same first 32 tokens.
    let v = vectors(&r.out, "text_embedding");
    assert_eq!(v[1], v[2]);
}

#[test]
fn existing_embeddings_are_reused_when_valid() {
    let texts = ["one", "two", "three"];
    let dim = 384;
    let known: Vec<f32> = (0..dim).map(|i| i as f32 / dim as f32).collect();
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let mut values = Vec::new();
    values.extend(known.iter().copied());
    values.extend(std::iter::repeat_n(0.0, dim));
    values.extend(std::iter::repeat_n(f32::NAN, dim));
    let existing = FixedSizeListArray::try_new(
        item.clone(),
        dim as i32,
        Arc::new(Float32Array::from(values)),
        Some(vec![true, false, true].into()),
    )
    .unwrap();
    let base = text_batch(&texts.map(Some));
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(
        "text_embedding",
        DataType::FixedSizeList(item, dim as i32),
        true,
    ));
    let mut cols = base.columns().to_vec();
    cols.push(Arc::new(existing));
    let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();

    let e = run_err(std::slice::from_ref(&b), &minilm_stage(""));
    assert!(
        e.contains("already has a column `text_embedding`") && e.contains("reuse_existing"),
        "{e}"
    );

    let r = run(&[b], 10, &minilm_stage("    reuse_existing: true\n"));
    let got = vectors(&r.out, "text_embedding");
    assert_eq!(got[0], known, "a valid existing embedding is kept as is");
    let fresh = vectors(
        &run(&[text_batch(&texts.map(Some))], 10, &minilm_stage("")).out,
        "text_embedding",
    );
    assert_eq!(got[1], fresh[1], "a null one is computed");
    assert_eq!(got[2], fresh[2], "a NaN one is computed");
    assert_eq!(r.detail("rows_reused"), 1);
    assert_eq!(r.out[0].schema().fields().len(), 3);
}

#[test]
fn bad_model_files_are_reported_before_running() {
    let m = minilm();
    let b = text_batch(&[Some("x")]);
    let stage = |model: &Path, tokenizer: &Path, extra: &str| {
        format!(
            "    model: {}\n    tokenizer: {}\n    columns: [text]\n{extra}",
            model.display(),
            tokenizer.display()
        )
    };
    let tok = m.join("tokenizer.json");
    let model = m.join("model.onnx");

    let e = run_err(
        std::slice::from_ref(&b),
        &stage(Path::new("/nonexistent/model.onnx"), &tok, ""),
    );
    assert!(
        e.contains("model file `/nonexistent/model.onnx` does not exist"),
        "{e}"
    );
    assert!(e.contains("scripts/fetch-model.sh"), "{e}");
    assert!(e.contains("stage `embed`"), "{e}");

    let e = run_err(
        std::slice::from_ref(&b),
        &stage(&model, Path::new("/nonexistent/tokenizer.json"), ""),
    );
    assert!(
        e.contains("tokenizer file `/nonexistent/tokenizer.json` does not exist"),
        "{e}"
    );

    let dir = tmp();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a protobuf at all \xff\xfe").unwrap();
    let e = run_err(std::slice::from_ref(&b), &stage(&garbage, &tok, ""));
    assert!(e.contains("is not an ONNX model"), "{e}");
    let bad_tok = dir.path().join("tokenizer.json");
    std::fs::write(&bad_tok, "{\"not\": \"a tokenizer\"}").unwrap();
    let e = run_err(std::slice::from_ref(&b), &stage(&model, &bad_tok, ""));
    assert!(
        e.contains("is not a valid HuggingFace tokenizer.json"),
        "{e}"
    );

    // A vector model given a text column: its inputs do not match.
    let e = run_err(
        std::slice::from_ref(&b),
        &stage(&data("tiny_vector.onnx"), &tok, ""),
    );
    assert!(
        e.contains("a text model must take `input_ids`") && e.contains("`x` float32 [?, 3]"),
        "{e}"
    );
    // Pooling that does not fit the output's rank.
    let e = run_err(
        &[vector_batch_fixed(&[[1.0, 2.0, 3.0]])],
        &tiny_vector_stage("").replace("pooling: none", "pooling: mean"),
    );
    assert!(
        e.contains("pooling `mean` needs a model output of shape [batch, tokens, dim]"),
        "{e}"
    );
    assert!(e.contains("use `pooling: none`"), "{e}");
    // A vector column whose length does not fit the model input.
    let e = run_err(
        &[vector_batch_fixed(&[[1.0, 2.0, 3.0]])],
        &tiny_vector_stage("").replace("tiny_vector", "tiny_image"),
    );
    assert!(
        e.contains("holds 3 floats per row, but model input `pixels` takes 192"),
        "{e}"
    );
    // Unknown device, missing column.
    let e = run_err(
        std::slice::from_ref(&b),
        &stage(&model, &tok, "    device: tpu\n"),
    );
    assert!(e.contains("unknown device `tpu`"), "{e}");
    let e = run_err(&[b], &stage(&model, &tok, "").replace("[text]", "[txt]"));
    assert!(
        e.contains("column `txt` is not in the input") && e.contains("did you mean `text`"),
        "{e}"
    );
}

#[test]
fn cuda_requested_without_a_cuda_runtime_is_an_error_and_auto_falls_back() {
    require_ort();
    let b = text_batch(&[Some("hello")]);
    let cuda_available = match try_run(
        std::slice::from_ref(&b),
        10,
        &minilm_stage("").replace("device: cpu", "device: cuda"),
    ) {
        Ok(r) => {
            assert_eq!(r.detail("execution_provider"), "CUDAExecutionProvider");
            true
        }
        Err((e, _)) => {
            let e = e.to_string();
            assert!(
                e.contains("device cuda:0 was asked for but cannot be used"),
                "{e}"
            );
            false
        }
    };
    let r = run(
        &[b],
        10,
        &minilm_stage("").replace("device: cpu", "device: auto"),
    );
    if cuda_available {
        assert_eq!(r.detail("device"), "cuda:0");
    } else {
        assert_eq!(r.detail("execution_provider"), "CPUExecutionProvider");
        assert!(r.detail("device_fallback").as_str().is_some());
    }
}

#[test]
fn bundled_embed_pipelines_validate() {
    minilm();
    minilm_int8();
    let root = repo();
    assert!(
        root.join("data/sample/verses.parquet").is_file(),
        "data/sample/verses.parquet is missing: run scripts/make-sample.sh"
    );
    // Pipelines name paths relative to the repository root, the tests' working directory.
    for p in [
        "pipelines/embed.yaml",
        "pipelines/embed-pairs.yaml",
        "pipelines/embed-int8.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(p)).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/pipeline.schema.json")
        );
        let pipeline = Pipeline::load(&root.join(p), &[]).unwrap_or_else(|e| panic!("{p}: {e}"));
        if p.ends_with("-int8.yaml") {
            assert!(text.contains("model: models/all-MiniLM-L6-v2-int8/model.onnx"));
        }
        let schema = &pipeline.plan().schemas["embed"];
        let embedded: Vec<&str> = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| n.ends_with("_embedding"))
            .collect();
        assert!(!embedded.is_empty());
        for n in embedded {
            assert_eq!(
                schema.field_with_name(n).unwrap().data_type(),
                &DataType::FixedSizeList(
                    Arc::new(Field::new("item", DataType::Float32, false)),
                    384
                )
            );
        }
    }
}

/// `device: auto` (the default) in a fresh process, where nothing has loaded ONNX Runtime yet:
/// the run succeeds, reports the provider that ran, and on the CPU uses the default
/// parallelism (one single-threaded session per core, at most 4).
#[test]
fn device_auto_in_a_fresh_process_reports_what_ran_and_its_parallelism() {
    require_ort();
    let d = tmp();
    let input = d.path().join("in.parquet");
    let texts = [
        "In the beginning.",
        "And the earth was without form.",
        "Light.",
    ];
    let texts: Vec<Option<&str>> = texts.iter().map(|t| Some(*t)).collect();
    write_parquet(&input, &[text_batch(&texts)], 2);
    let m = minilm();
    let yaml = format!(
        "version: 1\nsources:\n  s: {{type: parquet, path: {}}}\nstages:\n  e:\n    type: embed\n    inputs: [s]\n    model: {}\n    tokenizer: {}\n    columns: [text]\n    batch_size: 2\nsinks:\n  o: {{type: parquet_shards, inputs: [e], path: {}}}\n",
        input.display(),
        m.join("model.onnx").display(),
        m.join("tokenizer.json").display(),
        d.path().join("out").display()
    );
    let cfg = d.path().join("p.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let metrics = d.path().join("metrics.json");
    let o = std::process::Command::new(bin())
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--progress",
            "off",
            "--metrics-json",
        ])
        .arg(&metrics)
        .env("TRIPLINE_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    let e = &m["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "e")
        .unwrap()["details"];
    let cores = std::thread::available_parallelism().unwrap().get();
    match e["execution_provider"].as_str().unwrap() {
        "CPUExecutionProvider" => {
            assert_eq!(e["device"], "cpu");
            assert_eq!(e["workers"], cores.min(4) as u64, "{e}");
            assert_eq!(
                e["threads_per_worker"],
                (cores / cores.min(4)) as u64,
                "{e}"
            );
        }
        "CUDAExecutionProvider" => assert_eq!(e["workers"], 1, "{e}"),
        other => panic!("unexpected provider {other}"),
    }
    assert_eq!(read_output(&d.path().join("out"))[0].num_rows(), 3);
}

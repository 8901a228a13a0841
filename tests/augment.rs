//! The `augment` stage end to end through the public API: the issue's config contract, K views
//! (+ original) per record, byte-identical output for any worker count / batch size / run,
//! text, image and vector columns together, bad rows under `fail` and `skip`, and validation
//! that names every problem before anything runs.

mod common;

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, FixedSizeListArray, Float32Array, Int32Array,
    Int64Array, ListArray, RecordBatch, StringArray, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Float32Type};
use common::*;
use tripline::{Error, Pipeline, RunOptions};

/// A small encoded image whose content depends on `i` (PNG for even `i`, JPEG for odd).
fn encoded_image(i: usize) -> Vec<u8> {
    let (w, h) = (24 + (i % 5) as u32 * 3, 18 + (i % 3) as u32 * 4);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 9 + i as u32) as u8,
            (y * 13) as u8,
            ((x + y) * 5) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    let fmt = if i % 2 == 0 {
        image::ImageFormat::Png
    } else {
        image::ImageFormat::Jpeg
    };
    img.write_to(&mut out, fmt).unwrap();
    out.into_inner()
}

/// Rows `start..start+n` with text, image, fixed and variable vector columns.
fn mixed_batch(start: i64, n: usize) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let labels: Vec<i32> = ids.iter().map(|i| (i % 5) as i32).collect();
    let texts: Vec<String> = ids.iter().map(|&i| text_for(i)).collect();
    let images: Vec<Vec<u8>> = ids.iter().map(|&i| encoded_image(i as usize)).collect();
    let dim = 8;
    let values: Vec<f32> = (0..n * dim).map(|k| (k as f32 * 0.37).sin()).collect();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let fixed = FixedSizeListArray::try_new(
        item.clone(),
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
    .unwrap();
    let lvals: Vec<f32> = (0..n * 4).map(|k| k as f32 * 0.5 - 3.0).collect();
    let list = ListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        OffsetBuffer::from_lengths(vec![4; n]),
        Arc::new(Float32Array::from(lvals)),
        None,
    )
    .unwrap();
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("label", Arc::new(Int32Array::from(labels))),
        ("text", Arc::new(StringArray::from(texts))),
        (
            "image",
            Arc::new(BinaryArray::from_iter_values(images.iter())),
        ),
        ("vec", Arc::new(fixed)),
        ("lvec", Arc::new(list)),
    ])
    .unwrap()
}

const MIXED_OPS: &str = "    ops:
      text:
        - {op: word_deletion, rate: 0.2}
        - {op: word_swap, n: 1, p: 0.5}
        - {op: char_noise, rate: 0.05, keyboard: true}
      image:
        - {op: random_resized_crop, size: [16, 20], scale: [0.3, 1.0]}
        - {op: horizontal_flip, p: 0.5}
        - {op: color_jitter, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1}
        - {op: rotation, degrees: [-15, 15], p: 0.3}
        - {op: encode, format: png}
      vec:
        - {op: gaussian_noise, sigma: 0.1}
        - {op: dropout, rate: 0.2}
        - {op: l2_normalize}
      lvec:
        - {op: random_scaling, scale: [0.5, 2.0]}
    dims: {lvec: 4}
";

fn augment_yaml(input: &Path, out: &Path, batch_rows: usize, stage_extra: &str) -> String {
    format!(
        "version: 1
seed: 11
sources:
  docs:
    type: parquet
    path: {}
    batch_rows: {batch_rows}
stages:
  aug:
    type: augment
    inputs: [docs]
{stage_extra}sinks:
  shards:
    type: parquet_shards
    inputs: [aug]
    path: {}
",
        input.display(),
        out.display()
    )
}

fn run(yaml: &str, overrides: &[String]) -> tripline::runtime::metrics::RunSummary {
    Pipeline::from_yaml(yaml, overrides)
        .unwrap()
        .run_blocking(RunOptions::default())
        .unwrap()
}

fn concat(b: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&b[0].schema(), b).unwrap()
}

fn views(b: &RecordBatch) -> Vec<u32> {
    b.column_by_name("view")
        .unwrap()
        .as_any()
        .downcast_ref::<UInt32Array>()
        .unwrap()
        .values()
        .to_vec()
}

#[test]
fn issue_contract_config_validates() {
    let d = tmp();
    let input = d.path().join("in.parquet");
    write_parquet(&input, &[mixed_batch(0, 10)], 10);
    let yaml = augment_yaml(
        &input,
        &d.path().join("out"),
        100,
        "    workers: 2
    views: 2
    ops:
      text:                          # the column to augment
        - {op: word_deletion, rate: 0.1}
        - {op: word_swap, n: 1, p: 0.5}
      image:
        - {op: random_resized_crop, size: [224, 224], scale: [0.5, 1.0]}
        - {op: horizontal_flip, p: 0.5}
",
    );
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    let summary = p.run_blocking(RunOptions::default()).unwrap();
    let out = concat(&read_output(&d.path().join("out")));
    assert_eq!(out.num_rows(), 20);
    assert_eq!(views(&out), [0, 1].repeat(10));
    let aug = summary.components.iter().find(|c| c.name == "aug").unwrap();
    assert_eq!((aug.rows_in, aug.rows_out), (10, 20));
    // Images are re-encoded as PNG at 224×224 by default.
    let img = out.column_by_name("image").unwrap().as_binary::<i32>();
    for i in 0..img.len() {
        assert!(img.value(i).starts_with(b"\x89PNG"));
        let back = image::load_from_memory(img.value(i)).unwrap();
        assert_eq!((back.width(), back.height()), (224, 224));
    }
    let names: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["id", "view", "label", "text", "image", "vec", "lvec"]
    );
}

#[test]
fn output_is_identical_for_any_worker_count_batch_size_and_run() {
    let d = tmp();
    let input = d.path().join("in.parquet");
    write_parquet(&input, &[mixed_batch(0, 150), mixed_batch(150, 90)], 64);
    let mut outputs = Vec::new();
    for (i, (pool, workers, batch_rows)) in [(1, 1, 7), (2, 2, 64), (2, 2, 64), (4, 3, 33)]
        .into_iter()
        .enumerate()
    {
        let out = d.path().join(format!("out{i}"));
        let yaml = augment_yaml(
            &input,
            &out,
            batch_rows,
            &format!("    workers: {workers}\n    views: 2\n{MIXED_OPS}"),
        );
        run(&yaml, &[format!("runtime.workers={pool}")]);
        outputs.push(concat(&read_output(&out)));
    }
    assert_eq!(outputs[0].num_rows(), 480);
    for o in &outputs[1..] {
        assert_eq!(o, &outputs[0]);
    }
    // And the augmentation did something: views of one record differ from each other and from
    // the input.
    let input_batch = concat(&read_parquet(&input));
    let out = &outputs[0];
    let texts = strings(std::slice::from_ref(out), "text");
    let originals = strings(std::slice::from_ref(&input_batch), "text");
    let changed = (0..240)
        .filter(|&r| texts[2 * r] != originals[r] || texts[2 * r + 1] != originals[r])
        .count();
    assert!(changed > 150, "only {changed} of 240 records changed");
    let img = out.column_by_name("image").unwrap().as_binary::<i32>();
    let distinct_pairs = (0..240)
        .filter(|&r| img.value(2 * r) != img.value(2 * r + 1))
        .count();
    assert!(distinct_pairs > 200, "{distinct_pairs}");
}

#[test]
fn a_different_seed_gives_different_views() {
    let d = tmp();
    let input = d.path().join("in.parquet");
    write_parquet(&input, &[mixed_batch(0, 60)], 64);
    let mut texts = Vec::new();
    for seed in [1, 2] {
        let out = d.path().join(format!("out{seed}"));
        let yaml = augment_yaml(&input, &out, 64, &format!("    views: 1\n{MIXED_OPS}"));
        run(&yaml, &[format!("seed={seed}")]);
        texts.push(strings(&read_output(&out), "text"));
    }
    let same = texts[0]
        .iter()
        .zip(&texts[1])
        .filter(|(a, b)| a == b)
        .count();
    assert!(same < 40, "{same} of 60 texts identical across seeds");
}

#[test]
fn views_are_consecutive_and_keep_original_is_untouched() {
    let d = tmp();
    let input = d.path().join("in.parquet");
    let batch = mixed_batch(0, 40);
    write_parquet(&input, std::slice::from_ref(&batch), 64);
    let out = d.path().join("out");
    let yaml = augment_yaml(
        &input,
        &out,
        16,
        &format!("    views: 3\n    keep_original: true\n{MIXED_OPS}"),
    );
    run(&yaml, &[]);
    let got = concat(&read_output(&out));
    assert_eq!(got.num_rows(), 160);
    assert_eq!(views(&got), [0, 1, 2, 3].repeat(40));
    let ids = ids(std::slice::from_ref(&got));
    let labels = got
        .column_by_name("label")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int32Type>();
    let in_labels = batch
        .column_by_name("label")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int32Type>();
    let text = strings(std::slice::from_ref(&got), "text");
    let in_text = strings(std::slice::from_ref(&batch), "text");
    let img = got.column_by_name("image").unwrap().as_binary::<i32>();
    let in_img = batch.column_by_name("image").unwrap().as_binary::<i32>();
    let vec = got.column_by_name("vec").unwrap().as_fixed_size_list();
    let in_vec = batch.column_by_name("vec").unwrap().as_fixed_size_list();
    let lvec = got.column_by_name("lvec").unwrap().as_list::<i32>();
    for (r, original_text) in in_text.iter().enumerate() {
        for v in 0..4 {
            let o = 4 * r + v;
            assert_eq!(ids[o], r as i64);
            assert_eq!(labels.value(o), in_labels.value(r));
            assert_eq!(lvec.value(o).len(), 4);
            let vals = vec.value(o);
            let vals = vals.as_primitive::<Float32Type>();
            if v < 3 {
                // l2_normalize is the last vector op.
                let norm: f32 = vals.values().iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-4 || norm == 0.0, "{norm}");
            }
        }
        let o = 4 * r + 3;
        assert_eq!(&text[o], original_text, "original text untouched");
        assert_eq!(
            img.value(o),
            in_img.value(r),
            "original image bytes untouched"
        );
        assert_eq!(vec.value(o).as_ref(), in_vec.value(r).as_ref());
    }
}

#[test]
fn images_can_become_normalised_tensors() {
    let d = tmp();
    let input = d.path().join("in.parquet");
    write_parquet(&input, &[mixed_batch(0, 12)], 64);
    let out = d.path().join("out");
    let yaml = augment_yaml(
        &input,
        &out,
        64,
        "    views: 2
    keep_original: true
    ops:
      image:
        - {op: random_resized_crop, size: [8, 8]}
        - {op: grayscale, p: 0.5}
        - {op: gaussian_blur, sigma: [0.5, 1.0], p: 0.5}
        - {op: to_tensor, size: [6, 5], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], layout: nhwc}
",
    );
    run(&yaml, &[]);
    let got = concat(&read_output(&out));
    assert_eq!(got.num_rows(), 36);
    let t = got.column_by_name("image").unwrap();
    assert_eq!(
        t.data_type(),
        &DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 90)
    );
    let vals = t
        .as_fixed_size_list()
        .values()
        .as_primitive::<Float32Type>();
    // (x/255 − mean)/std is within [−0.485/0.229, (1 − 0.406)/0.225].
    assert!(vals.values().iter().all(|v| (-2.2..=2.7).contains(v)));
}

fn bad_batch() -> RecordBatch {
    let good = mixed_batch(0, 6);
    let mut texts: Vec<Option<String>> = (0..6).map(|i| Some(text_for(i))).collect();
    texts[1] = Some("   ".into());
    let mut images: Vec<Vec<u8>> = (0..6).map(encoded_image).collect();
    images[2] = b"not an image".to_vec();
    let ids: Vec<Option<i64>> = vec![Some(0), Some(1), Some(2), None, Some(4), Some(5)];
    let lvals: Vec<f32> = (0..23).map(|k| k as f32).collect();
    // Row 4 has 3 values instead of 4.
    let list = ListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        OffsetBuffer::from_lengths(vec![4, 4, 4, 4, 3, 4]),
        Arc::new(Float32Array::from(lvals)),
        None,
    )
    .unwrap();
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("label", good.column_by_name("label").unwrap().clone()),
        ("text", Arc::new(StringArray::from(texts))),
        (
            "image",
            Arc::new(BinaryArray::from_iter_values(images.iter())),
        ),
        ("vec", good.column_by_name("vec").unwrap().clone()),
        ("lvec", Arc::new(list)),
    ])
    .unwrap()
}

#[test]
fn bad_rows_are_quarantined_with_their_reason_under_skip() {
    let d = tmp();
    let input = d.path().join("in.parquet");
    write_parquet(&input, &[bad_batch()], 64);
    let out = d.path().join("out");
    let yaml = augment_yaml(
        &input,
        &out,
        64,
        &format!("    views: 2\n    on_error: skip\n{MIXED_OPS}"),
    );
    let summary = run(&yaml, &[]);
    let got = concat(&read_output(&out));
    assert_eq!(ids(std::slice::from_ref(&got)), [0, 0, 5, 5]);
    let aug = summary.components.iter().find(|c| c.name == "aug").unwrap();
    assert_eq!(aug.rows_skipped, 4);
    assert_eq!(summary.rows_quarantined, 4);
    let q = std::fs::read_to_string(out.join("quarantine/aug.jsonl")).unwrap();
    let reasons: Vec<(u64, String)> = q
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["row"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4);
    assert_eq!(reasons[0], (1, "column `text` is empty (no words)".into()));
    assert_eq!(reasons[1].0, 2);
    assert!(
        reasons[1]
            .1
            .starts_with("column `image`: cannot decode image"),
        "{}",
        reasons[1].1
    );
    assert_eq!(reasons[2], (3, "id column `id` is null".into()));
    assert_eq!(
        reasons[3],
        (
            4,
            "column `lvec` has a vector of 3 values, expected 4".into()
        )
    );
}

#[test]
fn a_bad_row_fails_the_pipeline_naming_row_and_reason() {
    let d = tmp();
    let input = d.path().join("in.parquet");
    write_parquet(&input, &[bad_batch()], 64);
    let yaml = augment_yaml(
        &input,
        &d.path().join("out"),
        64,
        &format!("    views: 2\n{MIXED_OPS}"),
    );
    let err = Pipeline::from_yaml(&yaml, &[])
        .unwrap()
        .run_blocking(RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("component `aug`"), "{err}");
    assert!(
        err.contains("row 1 of") && err.contains("column `text` is empty (no words)"),
        "{err}"
    );
}

#[test]
fn validation_names_every_problem_before_anything_runs() {
    let d = tmp();
    let input = d.path().join("in.parquet");
    write_parquet(&input, &[mixed_batch(0, 4)], 64);
    let file = d.path().join("pipeline.yaml");
    let yaml = augment_yaml(
        &input,
        &d.path().join("out"),
        64,
        "    views: 0
    id_column: text
    view_column: label
    ops:
      txet:
        - {op: word_deletion, rate: 0.1}
      label:
        - {op: word_swap}
      image:
        - {op: encode, format: jpeg}
        - {op: horizontal_flip, p: 1.5}
        - {op: word_deletion, rate: 0.1}
      vec:
        - {op: random_scaling, scale: [2.0, 1.0]}
      text:
        - {op: synonym_replacement, path: /nonexistent/syn.tsv}
        - {op: span_crop, min: 0.0, max: 0.5}
",
    );
    std::fs::write(&file, &yaml).unwrap();
    let err = match Pipeline::load(&file, &[]) {
        Ok(_) => panic!("expected validation to fail"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let msg = err.to_string();
    for want in [
        "`views` must be at least 1",
        "column `text` is Utf8, expected an integer column",
        "the input already has a column `label`",
        "column `txet` is not in the input",
        "did you mean `text`?",
        "column `label` is Int32, expected a string column",
        "`encode` decides the output form and must be the last op",
        "`p` of `horizontal_flip`: must be in [0, 1], got 1.5",
        "`word_deletion` is a text op (needs Utf8 or LargeUtf8), but this column's first op `encode` is an image op",
        "`scale` of `random_scaling`: min (2) is above max (1)",
        "`min` of `span_crop`: must be in (0, 1], got [0, 0.5]",
        "the id column cannot be augmented",
    ] {
        assert!(msg.contains(want), "missing {want:?} in:\n{msg}");
    }
    // Problems are located in the file.
    assert!(msg.contains("pipeline.yaml:"), "{msg}");

    // The synonyms file is checked once the rest is valid.
    let yaml = augment_yaml(
        &input,
        &d.path().join("out"),
        64,
        "    ops:
      text:
        - {op: synonym_replacement, path: /nonexistent/syn.tsv}
",
    );
    std::fs::write(&file, &yaml).unwrap();
    let msg = Pipeline::load(&file, &[]).unwrap_err().to_string();
    assert!(
        msg.contains("cannot read synonyms file /nonexistent/syn.tsv"),
        "{msg}"
    );
}

#[test]
fn unknown_ops_and_op_keys_are_rejected() {
    let d = tmp();
    let input = d.path().join("in.parquet");
    write_parquet(&input, &[mixed_batch(0, 4)], 64);
    for (ops, want) in [
        ("        - {op: word_dropout, rate: 0.1}\n", "word_dropout"),
        (
            "        - {op: word_deletion, rate: 0.1, n: 2}\n",
            "unknown field `n`",
        ),
    ] {
        let yaml = augment_yaml(
            &input,
            &d.path().join("out"),
            64,
            &format!("    ops:\n      text:\n{ops}"),
        );
        let msg = Pipeline::from_yaml(&yaml, &[]).unwrap_err().to_string();
        assert!(msg.contains(want), "{msg}");
    }
}

#[test]
fn synonyms_from_a_tsv_file_are_used() {
    let d = tmp();
    let input = d.path().join("in.parquet");
    write_parquet(&input, &[docs_batch(0, 50)], 64);
    let syn = d.path().join("syn.tsv");
    std::fs::write(&syn, "alpha\tALEPH\nbeta\tBETH\n").unwrap();
    let out = d.path().join("out");
    let yaml = augment_yaml(
        &input,
        &out,
        64,
        &format!(
            "    ops:\n      text:\n        - {{op: synonym_replacement, path: {}, n: 5}}\n",
            syn.display()
        ),
    );
    run(&yaml, &[]);
    let texts = strings(&read_output(&out), "text");
    let all: String = texts.into_iter().map(|t| t.unwrap() + " ").collect();
    assert!(all.contains("ALEPH") && all.contains("BETH"));
    assert!(!all.split_whitespace().any(|w| w == "alpha" || w == "beta"));
}

#[test]
fn sample_pipeline_makes_two_views_of_every_verse() {
    let d = tmp();
    let out = d.path().join("out");
    let p = Pipeline::load(
        Path::new("pipelines/augment.yaml"),
        &[format!("sinks.shards.path={}", out.display())],
    )
    .unwrap();
    let summary = p.run_blocking(RunOptions::default()).unwrap();
    let input = concat(&read_parquet(Path::new("data/sample/verses.parquet")));
    let got = concat(&read_output(&out));
    let n = input.num_rows();
    assert_eq!(summary.rows_quarantined, 0);
    assert_eq!(got.num_rows(), 2 * n);
    assert_eq!(views(&got), [0, 1].repeat(n));
    let in_ids = ids(std::slice::from_ref(&input));
    let out_ids = ids(std::slice::from_ref(&got));
    for r in 0..n {
        assert_eq!(out_ids[2 * r], in_ids[r]);
        assert_eq!(out_ids[2 * r + 1], in_ids[r]);
    }
    // Word deletion at 0.1 plus a swap: views keep most of the words of the verse.
    let text = strings(std::slice::from_ref(&got), "text");
    let in_text = strings(std::slice::from_ref(&input), "text");
    let (mut kept, mut total) = (0usize, 0usize);
    for r in (0..n).step_by(97) {
        let src = in_text[r].as_deref().unwrap();
        total += src.split_whitespace().count();
        kept += text[2 * r].as_deref().unwrap().split_whitespace().count();
    }
    let ratio = kept as f64 / total as f64;
    assert!((0.85..0.95).contains(&ratio), "kept {ratio}");
}

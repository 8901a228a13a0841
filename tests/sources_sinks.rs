//! Sources and sinks through the public API: projection and renames, sharding, Arrow IPC,
//! rolling shards, overwrite rules, worker-count independence, quarantine, fan-out, and bad
//! input (truncated, corrupt, invalid UTF-8, mismatched files) with located errors.

mod common;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use common::*;
use tripline::{Error, Pipeline, RunOptions};

fn run(yaml: &str) -> tripline::Result<tripline::RunSummary> {
    Pipeline::from_yaml(yaml, &[])?.run_blocking(RunOptions::default())
}

fn sink(out: &Path, extra: &str) -> String {
    format!(
        "sinks:\n  shards:\n    type: parquet_shards\n    inputs: [docs]\n    path: {}\n{extra}",
        out.display()
    )
}

#[test]
fn projection_order_and_renames() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 300, 128);
    let out = d.path().join("out");
    let yaml = format!(
        "version: 1\nsources:\n  docs:\n    type: parquet\n    path: {}\n    columns: [text, id]\n    rename: {{text: body}}\n    batch_rows: 50\n{}",
        input.display(),
        sink(&out, "")
    );
    run(&yaml).unwrap();
    let got = read_output(&out);
    let schema = got[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["body", "id"]);
    assert_eq!(ids(&got), (0..300).collect::<Vec<_>>());
    let want: Vec<Option<String>> = (0..300).map(|i| Some(text_for(i))).collect();
    assert_eq!(strings(&got, "body"), want);
}

#[test]
fn shards_split_the_input_exactly_and_deterministically() {
    let d = tmp();
    write_docs(&d.path().join("in/a.parquet"), 0, 1000, 100);
    write_docs(&d.path().join("in/b.parquet"), 1000, 550, 100);
    let mut all = Vec::new();
    for index in 0..3 {
        let out = d.path().join(format!("out{index}"));
        let yaml = format!(
            "version: 1\nsources:\n  docs:\n    type: parquet\n    path: {}/in/*.parquet\n    shard: {{index: {index}, count: 3}}\n{}",
            d.path().display(),
            sink(&out, "")
        );
        run(&yaml).unwrap();
        let got = ids(&read_output(&out));
        // Row groups are the unit: shard i reads row groups i, i+3, … across both files.
        let want: Vec<i64> = (0..16)
            .filter(|g| g % 3 == index)
            .flat_map(|g| g * 100..(g * 100 + 100).min(1550))
            .collect();
        assert_eq!(got, want, "shard {index}");
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (0..1550).collect::<Vec<_>>());
}

#[test]
fn arrow_ipc_file_and_stream_formats() {
    let d = tmp();
    let batches = [docs_batch(0, 700), docs_batch(700, 300)];
    let file = d.path().join("docs.arrow");
    let mut w =
        arrow::ipc::writer::FileWriter::try_new(File::create(&file).unwrap(), &docs_schema())
            .unwrap();
    batches.iter().for_each(|b| w.write(b).unwrap());
    w.finish().unwrap();
    let stream = d.path().join("docs.arrows");
    let mut w =
        arrow::ipc::writer::StreamWriter::try_new(File::create(&stream).unwrap(), &docs_schema())
            .unwrap();
    batches.iter().for_each(|b| w.write(b).unwrap());
    w.finish().unwrap();
    for (name, path) in [("file", &file), ("stream", &stream)] {
        let out = d.path().join(format!("out-{name}"));
        let yaml = format!(
            "version: 1\nsources:\n  docs:\n    type: arrow_ipc\n    path: {}\n    columns: [id, text]\n    batch_rows: 256\n{}",
            path.display(),
            sink(&out, "")
        );
        let summary = run(&yaml).unwrap();
        let got = read_output(&out);
        assert_eq!(ids(&got), (0..1000).collect::<Vec<_>>(), "{name}");
        assert_eq!(got[0].num_columns(), 2);
        // 700 → 256+256+188, 300 → 256+44
        assert_eq!(summary.components[0].batches_out, 5, "{name}");
    }
}

/// An IPC file of `n` batches of 100 rows: ids, a nullable text column and a dictionary
/// column, so the mapped reader decodes dictionaries and validity bitmaps too.
fn write_ipc_with_dictionary(path: &Path, n: i64) -> Vec<RecordBatch> {
    use arrow::array::{DictionaryArray, StringArray};
    use arrow::datatypes::Int32Type;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
        Field::new(
            "kind",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
    ]));
    let batches: Vec<RecordBatch> = (0..n)
        .map(|b| {
            let ids: Vec<i64> = (b * 100..b * 100 + 100).collect();
            let text: StringArray = ids
                .iter()
                .map(|i| (i % 7 != 3).then(|| text_for(*i)))
                .collect();
            // One dictionary for the whole file, as the file format requires.
            let keys = Int32Array::from_iter_values(ids.iter().map(|i| (*i % 3) as i32));
            let values = Arc::new(StringArray::from(vec!["anchor", "positive", "négative"]));
            let kind = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)) as ArrayRef,
                    Arc::new(text),
                    Arc::new(kind),
                ],
            )
            .unwrap()
        })
        .collect();
    let mut w =
        arrow::ipc::writer::FileWriter::try_new(File::create(path).unwrap(), &schema).unwrap();
    batches.iter().for_each(|b| w.write(b).unwrap());
    w.finish().unwrap();
    batches
}

#[test]
fn arrow_ipc_files_read_the_same_mapped_or_not_whole_or_sharded() {
    let d = tmp();
    let file = d.path().join("docs.arrow");
    let written = write_ipc_with_dictionary(&file, 7);
    let read = |tag: &str, extra: &str| -> Vec<RecordBatch> {
        let out = d.path().join(format!("out-{tag}"));
        let yaml = format!(
            "version: 1\nsources:\n  docs:\n    type: arrow_ipc\n    path: {}\n    batch_rows: 64\n{extra}{}",
            file.display(),
            sink(&out, "")
        );
        run(&yaml).unwrap();
        read_output(&out)
    };
    let cast = |bs: &[RecordBatch]| -> Vec<Vec<String>> {
        // Parquet stores the dictionary column as it likes; compare values as text.
        bs.iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |r| {
                    b.columns()
                        .iter()
                        .map(|c| arrow::util::display::array_value_to_string(c, r).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect()
    };
    let want = cast(&written);
    assert_eq!(want.len(), 700);
    assert_eq!(cast(&read("mapped", "")), want);
    assert_eq!(cast(&read("read", "    memory_map: false\n")), want);
    for mm in ["true", "false"] {
        let mut all = Vec::new();
        for index in 0..2 {
            let got = cast(&read(
                &format!("shard{index}-{mm}"),
                &format!("    memory_map: {mm}\n    shard: {{index: {index}, count: 2}}\n"),
            ));
            // IPC record batches are the unit: shard i holds batches i, i + 2, ...
            let mine: Vec<Vec<String>> = want
                .chunks(100)
                .enumerate()
                .filter(|(b, _)| b % 2 == index)
                .flat_map(|(_, rows)| rows.to_vec())
                .collect();
            assert_eq!(got, mine, "shard {index}, memory_map {mm}");
            all.extend(got);
        }
        all.sort();
        let mut sorted = want.clone();
        sorted.sort();
        assert_eq!(all, sorted, "memory_map {mm}");
    }
}

#[test]
fn damaged_arrow_ipc_files_are_errors_naming_the_file_not_crashes() {
    let d = tmp();
    let good = d.path().join("good.arrow");
    write_ipc_with_dictionary(&good, 3);
    let bytes = std::fs::read(&good).unwrap();
    let try_read = |name: &str, data: &[u8], mm: bool| -> String {
        let path = d.path().join(name);
        std::fs::write(&path, data).unwrap();
        let out = d.path().join(format!("out-{name}-{mm}"));
        let yaml = format!(
            "version: 1\nsources:\n  docs:\n    type: arrow_ipc\n    path: {}\n    memory_map: {mm}\n{}",
            path.display(),
            sink(&out, "")
        );
        let e = run(&yaml).expect_err(name).to_string();
        assert!(e.contains(&path.display().to_string()), "{name}: {e}");
        e
    };
    for mm in [true, false] {
        // Cut in the middle: the footer is gone.
        let e = try_read("cut.arrow", &bytes[..bytes.len() / 2], mm);
        assert!(e.contains("not a readable Arrow IPC file"), "{e}");
        // Only the magic and a trailer claiming a footer longer than the file.
        let mut tiny = b"ARROW1\0\0".to_vec();
        tiny.extend_from_slice(&1_000_000i32.to_le_bytes());
        tiny.extend_from_slice(b"ARROW1");
        let e = try_read("tiny.arrow", &tiny, mm);
        assert!(e.contains("not a readable Arrow IPC file"), "{e}");
    }
    // A record batch block pointing past the end: the footer's first block offset, rewritten.
    let footer_len =
        i32::from_le_bytes(bytes[bytes.len() - 10..bytes.len() - 6].try_into().unwrap()) as usize;
    let footer_start = bytes.len() - 10 - footer_len;
    let footer = arrow::ipc::root_as_footer(&bytes[footer_start..bytes.len() - 10]).unwrap();
    let first = footer.recordBatches().unwrap().get(0).offset();
    let at = footer_start
        + bytes[footer_start..bytes.len() - 10]
            .windows(8)
            .position(|w| w == first.to_le_bytes())
            .expect("the block offset is in the footer");
    let mut moved = bytes.clone();
    moved[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    let e = try_read("moved.arrow", &moved, true);
    assert!(e.contains("lies outside the file"), "{e}");
}

#[test]
fn shards_roll_by_bytes_and_hold_every_row() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 20_000, 1000);
    let out = d.path().join("out");
    let yaml = format!(
        "version: 1\nsources:\n  docs:\n    type: parquet\n    path: {}\n    batch_rows: 500\n{}",
        input.display(),
        sink(
            &out,
            "    max_shard_bytes: 20000\n    row_group_rows: 500\n    compression: none\n"
        )
    );
    run(&yaml).unwrap();
    let (_, m) = tripline::sinks::manifest::read(&out).unwrap();
    assert!(
        m.shards.len() > 3,
        "expected several shards, got {}",
        m.shards.len()
    );
    assert_eq!(m.rows, 20_000);
    assert_eq!(ids(&read_output(&out)), (0..20_000).collect::<Vec<_>>());
    let inspection = tripline::inspect::inspect(&out).unwrap();
    assert!(inspection.ok(), "{}", inspection.report);
}

#[test]
fn non_empty_output_is_refused_unless_overwriting() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 100, 100);
    let out = d.path().join("out");
    let yaml = format!(
        "version: 1\nsources:\n  docs:\n    type: parquet\n    path: {}\n{}",
        input.display(),
        sink(&out, "")
    );
    run(&yaml).unwrap();
    let err = run(&yaml).unwrap_err();
    assert!(
        matches!(&err, Error::Component { component, source } if component == "shards" && matches!(**source, Error::OutputNotEmpty(_))),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("is not empty; pass --overwrite or set `overwrite: true`"),
        "{err}"
    );
    // --overwrite replaces it; files tripline did not write block the overwrite.
    let p = Pipeline::from_yaml(&yaml, &[]).unwrap();
    p.run_blocking(RunOptions {
        overwrite: true,
        ..Default::default()
    })
    .unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let err = p
        .run_blocking(RunOptions {
            overwrite: true,
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("it holds `notes.txt`, which tripline did not write"),
        "{err}"
    );
    assert!(out.join("notes.txt").exists());
}

#[test]
fn output_is_identical_for_one_and_many_workers() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 5000, 512);
    let mut digests = Vec::new();
    for workers in [1, 2, 4] {
        let out = d.path().join(format!("out{workers}"));
        let yaml = format!(
            "version: 1\nseed: 3\nruntime: {{workers: {workers}}}\nsources:\n  docs: {{type: parquet, path: {}, batch_rows: 97}}\nstages:\n  clean: {{type: clean, inputs: [docs], text_columns: [text], trim: true, max_chars: 40, on_error: skip}}\nsinks:\n  shards: {{type: parquet_shards, inputs: [clean], path: {}, rows_per_shard: 1000}}\n",
            input.display(),
            out.display()
        );
        let summary = run(&yaml).unwrap();
        let (_, m) = tripline::sinks::manifest::read(&out).unwrap();
        digests.push((
            m.shards
                .iter()
                .map(|s| s.sha256.clone())
                .collect::<Vec<_>>(),
            summary.rows_quarantined,
        ));
    }
    assert!(
        digests[0].1 > 0,
        "the fixture should make the stage skip some rows"
    );
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[0], digests[2]);
}

#[test]
fn skipped_rows_are_quarantined_with_their_reason_and_counted() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    let texts = vec![Some("good"), Some("  "), None, Some("also good"), Some("")];
    let b = RecordBatch::try_new(
        docs_schema(),
        vec![
            Arc::new(Int64Array::from((0..5).collect::<Vec<i64>>())) as ArrayRef,
            Arc::new(Int32Array::from(vec![1; 5])),
            Arc::new(StringArray::from(texts)),
        ],
    )
    .unwrap();
    write_parquet(&input, &[b], 10);
    let out = d.path().join("out");
    let yaml = format!(
        "version: 1\nsources:\n  docs: {{type: parquet, path: {}}}\nstages:\n  clean: {{type: clean, inputs: [docs], text_columns: [text], trim: true, on_error: skip}}\nsinks:\n  shards: {{type: parquet_shards, inputs: [clean], path: {}}}\n",
        input.display(),
        out.display()
    );
    let summary = run(&yaml).unwrap();
    assert_eq!(summary.rows_quarantined, 3);
    let clean = summary
        .components
        .iter()
        .find(|c| c.name == "clean")
        .unwrap();
    assert_eq!(
        (clean.rows_in, clean.rows_out, clean.rows_skipped),
        (5, 2, 3)
    );
    assert_eq!(ids(&read_output(&out)), vec![0, 3]);
    let q = std::fs::read_to_string(out.join("quarantine/clean.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = q
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(u64, &str)> = lines
        .iter()
        .map(|l| (l["row"].as_u64().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "column `text` is empty, expected at least 1"),
            (2, "column `text` is null"),
            (4, "column `text` is empty, expected at least 1"),
        ]
    );
    assert_eq!(lines[0]["record"]["id"], "1");
    assert_eq!(lines[0]["origin"], input.display().to_string());
}

#[test]
fn fan_out_writes_the_same_rows_to_two_sinks() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 3000, 256);
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let yaml = format!(
        "version: 1\nsources:\n  docs: {{type: parquet, path: {}}}\nsinks:\n  a: {{type: parquet_shards, inputs: [docs], path: {}}}\n  b: {{type: parquet_shards, inputs: [docs], path: {}, compression: snappy, rows_per_shard: 1000}}\n",
        input.display(),
        a.display(),
        b.display()
    );
    run(&yaml).unwrap();
    assert_eq!(ids(&read_output(&a)), (0..3000).collect::<Vec<_>>());
    assert_eq!(ids(&read_output(&b)), (0..3000).collect::<Vec<_>>());
}

fn validation_error(yaml: &str) -> String {
    match Pipeline::from_yaml(yaml, &[]) {
        Err(e @ Error::Config(_)) => e.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn truncated_and_mismatched_files_are_caught_before_running() {
    let d = tmp();
    let good = d.path().join("in/a.parquet");
    write_docs(&good, 0, 100, 50);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = d.path().join("in/b.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = d.path().join("out");
    let yaml = format!(
        "version: 1\nsources:\n  docs:\n    type: parquet\n    path: {}/in/*.parquet\n{}",
        d.path().display(),
        sink(&out, "")
    );
    let e = validation_error(&yaml);
    assert!(
        e.contains(&format!("line 5:11: source `docs`: {}: not a readable Parquet file (truncated or corrupt footer?)", truncated.display())),
        "{e}"
    );

    // A second file whose `label` column has another type.
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
            Arc::new(StringArray::from(vec!["x"])),
            Arc::new(StringArray::from(vec!["y"])),
        ],
    )
    .unwrap();
    write_parquet(&truncated, &[other], 10);
    let e = validation_error(&yaml);
    assert!(
        e.contains("column `label` is Utf8 here but Int32 in the first file"),
        "{e}"
    );
}

#[test]
fn corrupt_pages_are_reported_with_file_and_row_group() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .set_compression(parquet::basic::Compression::UNCOMPRESSED)
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        File::create(&input).unwrap(),
        docs_schema(),
        Some(props),
    )
    .unwrap();
    w.write(&docs_batch(0, 300)).unwrap();
    w.close().unwrap();
    // Overwrite the first page header of row group 1's `text` column with garbage.
    let meta =
        parquet::file::reader::SerializedFileReader::new(File::open(&input).unwrap()).unwrap();
    use parquet::file::reader::FileReader;
    let offset = meta.metadata().row_group(1).column(2).data_page_offset() as usize;
    let mut bytes = std::fs::read(&input).unwrap();
    bytes[offset..offset + 24].fill(0xff);
    std::fs::write(&input, bytes).unwrap();
    let out = d.path().join("out");
    let yaml = format!(
        "version: 1\nsources:\n  docs: {{type: parquet, path: {}, batch_rows: 100}}\n{}",
        input.display(),
        sink(&out, "")
    );
    let e = run(&yaml).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "component `docs`: {}: row group 1 (rows 100..200), near row 100: ",
            input.display()
        )),
        "{msg}"
    );
    assert_eq!(e.exit_code(), 1);
    assert!(!out.join("manifest.json").exists());
}

#[test]
fn invalid_utf8_is_reported_with_file_and_row_group() {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::writer::SerializedFileWriter;
    let d = tmp();
    let input = d.path().join("bad-utf8.parquet");
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message m { required int64 id; required binary text (UTF8); }",
        )
        .unwrap(),
    );
    let mut w =
        SerializedFileWriter::new(File::create(&input).unwrap(), schema, Default::default())
            .unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<Int64Type>()
        .write_batch(&[0, 1, 2], None, None)
        .unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    let values = [
        ByteArray::from("ok"),
        ByteArray::from(vec![0xffu8, 0xfe, 0x41]),
        ByteArray::from("fine"),
    ];
    col.typed::<ByteArrayType>()
        .write_batch(&values, None, None)
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
    let out = d.path().join("out");
    let yaml = format!(
        "version: 1\nsources:\n  docs: {{type: parquet, path: {}}}\n{}",
        input.display(),
        sink(&out, "")
    );
    let msg = run(&yaml).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "component `docs`: {}: row group 0 (rows 0..3), near row 0: ",
            input.display()
        )),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("utf"), "{msg}");
}

#[test]
fn empty_text_column_check_is_a_type_error_for_non_strings() {
    let d = tmp();
    let input = d.path().join("docs.parquet");
    write_docs(&input, 0, 10, 10);
    let yaml = format!(
        "version: 1\nsources:\n  docs: {{type: parquet, path: {}}}\nstages:\n  clean: {{type: clean, inputs: [docs], text_columns: [label]}}\nsinks:\n  s: {{type: parquet_shards, inputs: [clean], path: {}}}\n",
        input.display(),
        d.path().join("o").display()
    );
    let e = validation_error(&yaml);
    assert!(
        e.contains(
            "stage `clean`: column `label` is Int32, expected a string column (Utf8 or LargeUtf8)"
        ),
        "{e}"
    );
}

#[test]
fn wide_rows_close_row_groups_by_size() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let d = tmp();
    let input = d.path().join("emb.parquet");
    write_parquet(&input, &[embedding_batch(0, 1000, 64)], 1000);
    let out = d.path().join("out");
    // Each 100-row batch holds 100 × (8 + 64 × 4) = 26,400 bytes of data.
    let yaml = format!(
        "version: 1\nsources:\n  docs: {{type: parquet, path: {}, batch_rows: 100}}\n{}",
        input.display(),
        sink(&out, "    row_group_bytes: 26400\n")
    );
    run(&yaml).unwrap();
    let reader =
        SerializedFileReader::new(File::open(out.join("part-00000.parquet")).unwrap()).unwrap();
    let groups: Vec<i64> = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .collect();
    assert_eq!(groups, vec![100; 10]);
    assert_eq!(ids(&read_output(&out)), (0..1000).collect::<Vec<_>>());
    // Without the byte bound, the same input is one row group.
    let out2 = d.path().join("out2");
    let yaml = format!(
        "version: 1\nsources:\n  docs: {{type: parquet, path: {}, batch_rows: 100}}\n{}",
        input.display(),
        sink(&out2, "")
    );
    run(&yaml).unwrap();
    let reader =
        SerializedFileReader::new(File::open(out2.join("part-00000.parquet")).unwrap()).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 1);
}

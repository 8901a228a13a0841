//! Per-op cost of the `augment` stage, one worker, fixed seed, throughput in rows.
//!
//! Groups:
//! * `augment_text` — the text pipeline alone (tokenise, ops, join) over 8,192 verse-length
//!   sentences: `deletion+swap` (the end-to-end benchmark's ops) and `all_ops` (every text op).
//! * `augment_image` — one generated 500×375 JPEG: `decode` alone, colour jitter and JPEG q90
//!   encode alone on a 224×224 crop, and the views pipeline (random resized crop 224 + flip +
//!   colour jitter + JPEG q90 encode) from decoded pixels.
//! * `augment_vector` — noise + dropout + scaling + L2 normalisation of 768-d vectors.
//!
//! Run: `cargo bench --bench augment` (add `-- augment_text` to pick a group). The whole-pipeline
//! comparison with Python peers is `scripts/bench-augment.py`.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Cursor;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tripline::stages::augment::config::{
    AugmentOp, CaseMode, CharEdit, ImageEncoding, PunctuationMode,
};
use tripline::stages::augment::image::{ImagePipeline, ImageScratch, Img, Jitter};
use tripline::stages::augment::rng::{OpRng, record_key};
use tripline::stages::augment::text::{TextPipeline, TextScratch};
use tripline::stages::augment::vector::VectorPipeline;

const SEED: u64 = 7;

/// Verse-like sentences (~20 words) from a fixed vocabulary.
fn sentences(n: usize) -> Vec<String> {
    let vocab = [
        "the", "earth", "was", "formless", "and", "empty.", "Darkness", "on", "surface", "of",
        "deep", "God’s", "Spirit", "hovering", "over", "waters,", "light", "said,", "Let", "be",
    ];
    (0..n)
        .map(|i| {
            let len = 12 + (i * 7) % 17;
            (0..len)
                .map(|k| vocab[(i * 31 + k * 13) % vocab.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn bench_text(c: &mut Criterion) {
    let rows = sentences(8192);
    let mut g = c.benchmark_group("augment_text");
    g.throughput(Throughput::Elements(rows.len() as u64));
    let cases = [
        (
            "deletion+swap",
            vec![
                AugmentOp::WordDeletion { rate: 0.1, p: 1.0 },
                AugmentOp::WordSwap { n: 1, p: 1.0 },
            ],
        ),
        (
            "all_ops",
            vec![
                AugmentOp::WordDeletion { rate: 0.1, p: 1.0 },
                AugmentOp::WordSwap { n: 1, p: 1.0 },
                AugmentOp::WordInsertion { n: 1, p: 1.0 },
                AugmentOp::SpanCrop {
                    min: 0.7,
                    max: 1.0,
                    p: 1.0,
                },
                AugmentOp::CharNoise {
                    rate: 0.05,
                    edits: vec![
                        CharEdit::Insert,
                        CharEdit::Delete,
                        CharEdit::Substitute,
                        CharEdit::Transpose,
                    ],
                    keyboard: true,
                    p: 1.0,
                },
                AugmentOp::TokenMask {
                    rate: 0.1,
                    mask_token: "[MASK]".into(),
                    p: 1.0,
                },
                AugmentOp::Normalize {
                    case: CaseMode::Lower,
                    punctuation: PunctuationMode::Remove,
                    p: 1.0,
                },
            ],
        ),
    ];
    for (name, ops) in cases {
        let p = TextPipeline::new(&ops, &HashMap::new());
        let mut s = TextScratch::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut total = 0usize;
                for (i, t) in rows.iter().enumerate() {
                    p.apply(t, record_key(SEED, 1, i as u64, 0), &mut s);
                    total += s.out.len();
                }
                black_box(total)
            })
        });
    }
    g.finish();
}

/// A generated photo-sized JPEG (gradients + noise).
fn jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(500, 375, |x, y| {
        let n = ((x * 7919 + y * 104_729) % 23) as u8;
        image::Rgb([(x / 2) as u8 ^ n, (y / 2) as u8, ((x + y) / 4) as u8 + n])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn bench_image(c: &mut Criterion) {
    let bytes = jpeg();
    let mut g = c.benchmark_group("augment_image");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(Img::decode(&bytes).unwrap()))
    });
    let src = Img::decode(&bytes).unwrap();
    let p = ImagePipeline::new(&[
        AugmentOp::RandomResizedCrop {
            size: [224, 224],
            scale: [0.08, 1.0],
            ratio: [0.75, 4.0 / 3.0],
            p: 1.0,
        },
        AugmentOp::HorizontalFlip { p: 0.5 },
        AugmentOp::ColorJitter {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            p: 1.0,
        },
        AugmentOp::Encode {
            format: ImageEncoding::Jpeg,
            quality: 90,
        },
    ]);
    // The pieces of that pipeline on a 224×224 crop: colour jitter (a fresh draw each time) and
    // the JPEG q90 encode.
    let crop = {
        let data = (0..224 * 224)
            .flat_map(|k| src.data[k * 3..k * 3 + 3].to_vec())
            .collect();
        Img {
            w: 224,
            h: 224,
            data,
        }
    };
    let mut work = crop.clone();
    let mut j = 0u64;
    g.bench_function("jitter_224", |b| {
        b.iter(|| {
            j += 1;
            work.data.copy_from_slice(&crop.data);
            let mut rng = OpRng::new(record_key(SEED, 2, j, 0), 2);
            Jitter::draw(0.4, 0.4, 0.4, 0.1, &mut rng).apply(&mut work);
            black_box(work.data[0])
        })
    });
    let mut encoded = Vec::new();
    g.bench_function("jpeg_q90_encode_224", |b| {
        b.iter(|| {
            crop.encode(ImageEncoding::Jpeg, 90, &mut encoded).unwrap();
            black_box(encoded.len())
        })
    });
    let mut s = ImageScratch::default();
    let mut t = Vec::new();
    let mut i = 0u64;
    g.bench_function("crop224+flip+jitter+jpeg", |b| {
        b.iter(|| {
            i += 1;
            p.apply(&src, record_key(SEED, 2, i, 0), &mut s, &mut t)
                .unwrap();
            black_box(s.encoded.len())
        })
    });
    g.finish();
}

fn bench_vector(c: &mut Criterion) {
    let n = 1024;
    let dim = 768;
    let data: Vec<f32> = (0..n * dim).map(|k| (k as f32 * 0.01).sin()).collect();
    let p = VectorPipeline::new(&[
        AugmentOp::GaussianNoise {
            sigma: 0.05,
            p: 1.0,
        },
        AugmentOp::Dropout {
            rate: 0.1,
            rescale: true,
            p: 1.0,
        },
        AugmentOp::RandomScaling {
            scale: [0.9, 1.1],
            p: 1.0,
        },
        AugmentOp::L2Normalize { p: 1.0 },
    ]);
    let mut g = c.benchmark_group("augment_vector");
    g.throughput(Throughput::Elements(n as u64));
    let mut buf = data.clone();
    g.bench_function("noise+dropout+scale+l2_768d", |b| {
        b.iter(|| {
            buf.copy_from_slice(&data);
            for (i, v) in buf.chunks_exact_mut(dim).enumerate() {
                p.apply(v, record_key(SEED, 3, i as u64, 0));
            }
            black_box(buf[0])
        })
    });
    g.finish();
}

criterion_group!(benches, bench_text, bench_image, bench_vector);
criterion_main!(benches);

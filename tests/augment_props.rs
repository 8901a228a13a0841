//! Property tests of the augment ops: no panic on any Unicode input, invariants of every text
//! op, image output sizes as configured, vector lengths kept, and determinism per key.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use tripline::stages::augment::config::{
    AugmentOp, CaseMode, CharEdit, ImageEncoding, PunctuationMode, TensorLayout,
};
use tripline::stages::augment::image::{ImagePipeline, ImageScratch, Img, crop_box};
use tripline::stages::augment::rng::OpRng;
use tripline::stages::augment::text::{Synonyms, TextPipeline, TextScratch};
use tripline::stages::augment::vector::VectorPipeline;

fn all_text_ops() -> (Vec<AugmentOp>, HashMap<usize, Arc<Synonyms>>) {
    let ops = vec![
        AugmentOp::Normalize {
            case: CaseMode::Lower,
            punctuation: PunctuationMode::Ascii,
            p: 0.5,
        },
        AugmentOp::SynonymReplacement {
            path: "unused".into(),
            n: 2,
            p: 0.7,
        },
        AugmentOp::WordInsertion { n: 2, p: 0.5 },
        AugmentOp::WordDeletion { rate: 0.3, p: 0.8 },
        AugmentOp::WordSwap { n: 2, p: 0.8 },
        AugmentOp::SpanCrop {
            min: 0.5,
            max: 1.0,
            p: 0.5,
        },
        AugmentOp::CharNoise {
            rate: 0.2,
            edits: vec![
                CharEdit::Insert,
                CharEdit::Delete,
                CharEdit::Substitute,
                CharEdit::Transpose,
            ],
            keyboard: true,
            p: 0.8,
        },
        AugmentOp::TokenMask {
            rate: 0.2,
            mask_token: "[MASK]".into(),
            p: 0.5,
        },
        AugmentOp::Normalize {
            case: CaseMode::Upper,
            punctuation: PunctuationMode::Remove,
            p: 0.3,
        },
    ];
    let syn = Synonyms::parse("a\tb\tc d\nthe\tle\n", false).unwrap();
    (ops, HashMap::from([(1, Arc::new(syn))]))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any Unicode text with a word: no panic, a non-empty result without edge or repeated
    /// white space, and the same result for the same key.
    #[test]
    fn text_ops_never_panic_and_keep_invariants(text in "\\PC{0,60}", key in any::<u64>()) {
        let (ops, syn) = all_text_ops();
        let p = TextPipeline::new(&ops, &syn);
        prop_assume!(!TextPipeline::is_empty_text(&text));
        let mut s = TextScratch::default();
        p.apply(&text, key, &mut s);
        let out = s.out.clone();
        prop_assert!(!out.is_empty());
        prop_assert_eq!(out.trim(), out.as_str());
        prop_assert!(!out.contains("  "));
        p.apply(&text, key, &mut s);
        prop_assert_eq!(&s.out, &out);
    }

    /// Deletion never adds words and keeps at least one; swaps keep the multiset of words.
    #[test]
    fn word_ops_bound_word_counts(words in proptest::collection::vec("[a-zé日]{1,5}", 1..30), key in any::<u64>()) {
        let text = words.join(" ");
        let del = TextPipeline::new(&[AugmentOp::WordDeletion { rate: 0.5, p: 1.0 }], &HashMap::new());
        let mut s = TextScratch::default();
        del.apply(&text, key, &mut s);
        let n = s.out.split_whitespace().count();
        prop_assert!(n >= 1 && n <= words.len());
        let swap = TextPipeline::new(&[AugmentOp::WordSwap { n: 3, p: 1.0 }], &HashMap::new());
        swap.apply(&text, key, &mut s);
        let mut a: Vec<&str> = s.out.split_whitespace().collect();
        let mut b: Vec<&str> = words.iter().map(String::as_str).collect();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }

    /// Random resized crop always yields a box inside the image.
    #[test]
    fn crop_box_is_inside(w in 1u32..600, h in 1u32..600, s0 in 0.01f64..1.0, ds in 0.0f64..1.0,
                          r0 in 0.2f64..3.0, dr in 0.0f64..3.0, key in any::<u64>()) {
        let scale = [s0, (s0 + ds).min(1.0)];
        let ratio = [r0, r0 + dr];
        let mut rng = OpRng::new(key, 0);
        let (x, y, cw, ch) = crop_box(w, h, scale, ratio, &mut rng);
        prop_assert!(cw >= 1 && ch >= 1 && x + cw <= w && y + ch <= h);
    }

    /// Image outputs have the configured size whatever the input size.
    #[test]
    fn image_outputs_have_configured_sizes(w in 1u32..48, h in 1u32..48, oh in 1u32..20, ow in 1u32..20,
                                           key in any::<u64>()) {
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 31 % 251) as u8).collect();
        let src = Img { w, h, data };
        let ops = vec![
            AugmentOp::RandomResizedCrop { size: [oh, ow], scale: [0.08, 1.0], ratio: [0.75, 4.0 / 3.0], p: 0.9 },
            AugmentOp::Rotation { degrees: [-30.0, 30.0], fill: [1, 2, 3], p: 0.5 },
            AugmentOp::ColorJitter { brightness: 0.5, contrast: 0.5, saturation: 0.5, hue: 0.2, p: 0.9 },
            AugmentOp::GaussianBlur { sigma: [0.1, 2.0], kernel_size: None, p: 0.5 },
            AugmentOp::VerticalFlip { p: 0.5 },
            AugmentOp::Resize { size: [oh, ow], p: 1.0 },
            AugmentOp::ToTensor { size: [oh, ow], mean: [0.0; 3], std: [1.0; 3], layout: TensorLayout::Nchw },
        ];
        let p = ImagePipeline::new(&ops);
        let mut s = ImageScratch::default();
        let mut t = Vec::new();
        p.apply(&src, key, &mut s, &mut t).unwrap();
        prop_assert_eq!(t.len(), (3 * oh * ow) as usize);
        prop_assert!(t.iter().all(|v| (0.0..=1.0).contains(v)));

        let enc = ImagePipeline::new(&[
            AugmentOp::RandomResizedCrop { size: [oh, ow], scale: [0.08, 1.0], ratio: [0.75, 4.0 / 3.0], p: 1.0 },
            AugmentOp::Encode { format: ImageEncoding::Jpeg, quality: 80 },
        ]);
        enc.apply(&src, key, &mut s, &mut t).unwrap();
        let back = Img::decode(&s.encoded).unwrap();
        prop_assert_eq!((back.w, back.h), (ow, oh));
    }

    /// Vector ops keep the length and are deterministic per key.
    #[test]
    fn vector_ops_keep_length(v in proptest::collection::vec(-10f32..10.0, 1..64), key in any::<u64>()) {
        let p = VectorPipeline::new(&[
            AugmentOp::GaussianNoise { sigma: 0.3, p: 0.8 },
            AugmentOp::Dropout { rate: 0.3, rescale: true, p: 0.8 },
            AugmentOp::RandomScaling { scale: [0.5, 1.5], p: 0.8 },
            AugmentOp::L2Normalize { p: 0.5 },
        ]);
        let mut a = v.clone();
        let mut b = v.clone();
        p.apply(&mut a, key);
        p.apply(&mut b, key);
        prop_assert_eq!(a.len(), v.len());
        prop_assert_eq!(a, b);
    }
}

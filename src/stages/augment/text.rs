//! Text ops (EDA/nlpaug-style) on one string at a time.
//!
//! A text is split into words: maximal runs of non-white-space characters (Unicode
//! `White_Space`). Word ops rearrange word ranges in a per-worker arena without allocating per
//! word; character ops work on extended grapheme clusters, so combining marks, emoji sequences
//! and Hangul syllables are never split. The result is the words joined by single spaces.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use unicode_segmentation::UnicodeSegmentation;

use super::config::{AugmentOp, CaseMode, CharEdit, PunctuationMode};
use super::rng::OpRng;

/// A synonyms table: word → synonyms.
#[derive(Debug, Default, Clone)]
pub struct Synonyms {
    map: HashMap<String, Vec<String>>,
}

impl Synonyms {
    /// Reads a TSV (`word<TAB>synonym…` per line) or JSON (`{"word": ["synonym", …]}`) file.
    /// JSON is recognised by the `.json` extension or a leading `{`.
    ///
    /// # Errors
    /// A message naming the file (and line for TSV) when it cannot be read or parsed, or when
    /// it holds no synonyms at all.
    pub fn load(path: &Path) -> Result<Synonyms, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read synonyms file {}: {e}", path.display()))?;
        Self::parse(&text, path.extension().is_some_and(|e| e == "json"))
            .map_err(|e| format!("synonyms file {}: {e}", path.display()))
    }

    /// Parses the content of a synonyms file (`json`: JSON, else TSV unless it starts with `{`).
    ///
    /// # Errors
    /// A message naming the problem (and the line for TSV).
    pub fn parse(text: &str, json: bool) -> Result<Synonyms, String> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        if json || text.trim_start().starts_with('{') {
            let v: HashMap<String, Vec<String>> = serde_json::from_str(text)
                .map_err(|e| format!("expected a JSON object of string lists: {e}"))?;
            for (k, syns) in v {
                let syns: Vec<String> = syns
                    .into_iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty() && *s != k)
                    .collect();
                if !syns.is_empty() && !k.trim().is_empty() {
                    map.entry(k.trim().to_string()).or_default().extend(syns);
                }
            }
        } else {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut fields = line.split('\t');
                let word = fields.next().unwrap_or("").trim();
                let syns: Vec<String> = fields
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty() && s != word)
                    .collect();
                if word.is_empty() || syns.is_empty() {
                    return Err(format!(
                        "line {}: expected `word<TAB>synonym[<TAB>synonym…]`",
                        i + 1
                    ));
                }
                map.entry(word.to_string()).or_default().extend(syns);
            }
        }
        if map.is_empty() {
            return Err("no synonyms found".into());
        }
        Ok(Synonyms { map })
    }

    /// The synonyms of `word`: looked up as written, then lower-cased.
    pub fn get(&self, word: &str) -> Option<&[String]> {
        if let Some(v) = self.map.get(word) {
            return Some(v);
        }
        if word.chars().any(char::is_uppercase) {
            return self.map.get(&word.to_lowercase()).map(Vec::as_slice);
        }
        None
    }

    /// Number of head words.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A compiled text op.
#[derive(Debug, Clone)]
enum TextOp {
    Deletion(f64),
    Swap(u32),
    Insertion(u32),
    Synonym(u32, Arc<Synonyms>),
    SpanCrop(f64, f64),
    CharNoise {
        rate: f64,
        edits: Vec<CharEdit>,
        keyboard: bool,
    },
    Mask(f64, String),
    Normalize(CaseMode, PunctuationMode),
}

/// The ordered text ops of one column.
#[derive(Debug, Clone)]
pub struct TextPipeline {
    ops: Vec<(TextOp, f64)>,
}

/// Reusable buffers of one worker; keeps the per-row work free of allocations once warm.
#[derive(Debug, Default)]
pub struct TextScratch {
    arena: String,
    words: Vec<(u32, u32)>,
    tmp: Vec<(u32, u32)>,
    buf: String,
    candidates: Vec<usize>,
    /// The last result of [`TextPipeline::apply`].
    pub out: String,
}

impl TextPipeline {
    /// Compiles `ops` (all text ops; `synonyms` holds the loaded table of each
    /// `synonym_replacement`, by op index).
    ///
    /// # Panics
    /// When an op is not a text op or a synonyms table is missing (validation prevents both).
    pub fn new(ops: &[AugmentOp], synonyms: &HashMap<usize, Arc<Synonyms>>) -> TextPipeline {
        let ops = ops
            .iter()
            .enumerate()
            .map(|(i, op)| {
                let compiled = match op {
                    AugmentOp::WordDeletion { rate, .. } => TextOp::Deletion(*rate),
                    AugmentOp::WordSwap { n, .. } => TextOp::Swap(*n),
                    AugmentOp::WordInsertion { n, .. } => TextOp::Insertion(*n),
                    AugmentOp::SynonymReplacement { n, .. } => {
                        TextOp::Synonym(*n, synonyms.get(&i).expect("synonyms loaded").clone())
                    }
                    AugmentOp::SpanCrop { min, max, .. } => TextOp::SpanCrop(*min, *max),
                    AugmentOp::CharNoise {
                        rate,
                        edits,
                        keyboard,
                        ..
                    } => TextOp::CharNoise {
                        rate: *rate,
                        edits: edits.clone(),
                        keyboard: *keyboard,
                    },
                    AugmentOp::TokenMask {
                        rate, mask_token, ..
                    } => TextOp::Mask(*rate, mask_token.trim().to_string()),
                    AugmentOp::Normalize {
                        case, punctuation, ..
                    } => TextOp::Normalize(*case, *punctuation),
                    other => panic!("`{}` is not a text op", other.name()),
                };
                (compiled, op.p())
            })
            .collect();
        TextPipeline { ops }
    }

    /// Whether `text` can be augmented (it has at least one word).
    pub fn is_empty_text(text: &str) -> bool {
        text.split_whitespace().next().is_none()
    }

    /// Applies every op to `text` with the record key `key`; the result is left in
    /// `scratch.out`. `text` must have a word (see [`is_empty_text`](Self::is_empty_text)).
    pub fn apply(&self, text: &str, key: u64, s: &mut TextScratch) {
        s.arena.clear();
        s.arena.push_str(text);
        tokenize(&s.arena, 0, &mut s.words);
        for (i, (op, p)) in self.ops.iter().enumerate() {
            let mut rng = OpRng::new(key, i);
            if !rng.chance(*p) {
                continue;
            }
            apply_op(op, &mut rng, s);
        }
        s.out.clear();
        for (k, &(a, b)) in s.words.iter().enumerate() {
            if k > 0 {
                s.out.push(' ');
            }
            s.out.push_str(&s.arena[a as usize..b as usize]);
        }
    }
}

/// Appends the word ranges of `text[from..]` to `words` (after clearing it).
fn tokenize(text: &str, from: usize, words: &mut Vec<(u32, u32)>) {
    words.clear();
    let bytes = text.as_bytes();
    let mut start: Option<usize> = None;
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        // ASCII fast path; other characters are decoded to test Unicode White_Space.
        let (space, len) = if b < 0x80 {
            (matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C), 1)
        } else {
            let c = text[i..].chars().next().expect("char boundary");
            (c.is_whitespace(), c.len_utf8())
        };
        if space {
            if let Some(st) = start.take() {
                words.push((st as u32, i as u32));
            }
        } else if start.is_none() {
            start = Some(i);
        }
        i += len;
    }
    if let Some(st) = start {
        words.push((st as u32, text.len() as u32));
    }
}

fn apply_op(op: &TextOp, rng: &mut OpRng, s: &mut TextScratch) {
    let len = s.words.len();
    if len == 0 {
        return;
    }
    match op {
        TextOp::Deletion(rate) => {
            if len == 1 {
                return;
            }
            s.tmp.clear();
            for &w in &s.words {
                if !rng.chance(*rate) {
                    s.tmp.push(w);
                }
            }
            if s.tmp.is_empty() {
                s.tmp.push(s.words[rng.below(len)]);
            }
            std::mem::swap(&mut s.words, &mut s.tmp);
        }
        TextOp::Swap(n) => {
            if len < 2 {
                return;
            }
            for _ in 0..*n {
                let i = rng.below(len);
                let mut j = rng.below(len - 1);
                if j >= i {
                    j += 1;
                }
                s.words.swap(i, j);
            }
        }
        TextOp::Insertion(n) => {
            for _ in 0..*n {
                let w = s.words[rng.below(s.words.len())];
                let at = rng.below(s.words.len() + 1);
                s.words.insert(at, w);
            }
        }
        TextOp::Synonym(n, syn) => {
            s.candidates.clear();
            for (k, &(a, b)) in s.words.iter().enumerate() {
                if syn.get(&s.arena[a as usize..b as usize]).is_some() {
                    s.candidates.push(k);
                }
            }
            let take = (*n as usize).min(s.candidates.len());
            for k in 0..take {
                let pick = k + rng.below(s.candidates.len() - k);
                s.candidates.swap(k, pick);
                let w = s.candidates[k];
                let (a, b) = s.words[w];
                let options = syn
                    .get(&s.arena[a as usize..b as usize])
                    .expect("candidate has synonyms");
                let chosen = &options[rng.below(options.len())];
                let start = s.arena.len();
                s.arena.push_str(chosen);
                s.words[w] = (start as u32, s.arena.len() as u32);
            }
        }
        TextOp::SpanCrop(min, max) => {
            let f = rng.uniform(*min, *max);
            let k = ((f * len as f64).round() as usize).clamp(1, len);
            let start = rng.below(len - k + 1);
            s.words.copy_within(start..start + k, 0);
            s.words.truncate(k);
        }
        TextOp::Mask(rate, token) => {
            let mut token_range: Option<(u32, u32)> = None;
            for k in 0..len {
                if rng.chance(*rate) {
                    let r = *token_range.get_or_insert_with(|| {
                        let start = s.arena.len();
                        s.arena.push_str(token);
                        (start as u32, s.arena.len() as u32)
                    });
                    s.words[k] = r;
                }
            }
        }
        TextOp::CharNoise {
            rate,
            edits,
            keyboard,
        } => {
            // Rewrite every word into `buf`, then make `buf` the new arena.
            s.buf.clear();
            s.tmp.clear();
            for &(a, b) in &s.words {
                let word = &s.arena[a as usize..b as usize];
                let start = s.buf.len();
                noise_word(word, *rate, edits, *keyboard, rng, &mut s.buf);
                s.tmp.push((start as u32, s.buf.len() as u32));
            }
            std::mem::swap(&mut s.arena, &mut s.buf);
            std::mem::swap(&mut s.words, &mut s.tmp);
        }
        TextOp::Normalize(case, punct) => {
            s.buf.clear();
            s.tmp.clear();
            for &(a, b) in &s.words {
                let word = &s.arena[a as usize..b as usize];
                let start = s.buf.len();
                for c in word.chars() {
                    let c = match punct {
                        PunctuationMode::Keep => Some(c),
                        PunctuationMode::Remove => (!is_punctuation(c)).then_some(c),
                        PunctuationMode::Ascii => {
                            if let Some(m) = ascii_punctuation(c) {
                                s.buf.push_str(m);
                                None
                            } else {
                                Some(c)
                            }
                        }
                    };
                    let Some(c) = c else { continue };
                    match case {
                        CaseMode::Keep => s.buf.push(c),
                        CaseMode::Lower => s.buf.extend(c.to_lowercase()),
                        CaseMode::Upper => s.buf.extend(c.to_uppercase()),
                    }
                }
                // Case mapping never yields white space, but punctuation removal can empty a word.
                if s.buf.len() > start {
                    s.tmp.push((start as u32, s.buf.len() as u32));
                }
            }
            if s.tmp.is_empty() {
                // Everything was punctuation: keep the text as it was rather than emit nothing.
                return;
            }
            std::mem::swap(&mut s.arena, &mut s.buf);
            std::mem::swap(&mut s.words, &mut s.tmp);
        }
    }
}

/// Applies character noise to one word (no white space in it), appending to `out`. Never
/// empties the word.
fn noise_word(
    word: &str,
    rate: f64,
    edits: &[CharEdit],
    keyboard: bool,
    rng: &mut OpRng,
    out: &mut String,
) {
    let start = out.len();
    let mut graphemes = word.graphemes(true).peekable();
    let mut emitted = 0usize;
    while let Some(g) = graphemes.next() {
        if !rng.chance(rate) {
            out.push_str(g);
            emitted += 1;
            continue;
        }
        match edits[rng.below(edits.len())] {
            CharEdit::Insert => {
                out.push_str(g);
                out.push(noise_char(g, keyboard, rng));
                emitted += 2;
            }
            CharEdit::Delete => {
                if emitted == 0 && graphemes.peek().is_none() {
                    out.push_str(g);
                    emitted += 1;
                }
            }
            CharEdit::Substitute => {
                out.push(noise_char(g, keyboard, rng));
                emitted += 1;
            }
            CharEdit::Transpose => match graphemes.next() {
                Some(next) => {
                    out.push_str(next);
                    out.push_str(g);
                    emitted += 2;
                }
                None => {
                    out.push_str(g);
                    emitted += 1;
                }
            },
        }
    }
    debug_assert!(out.len() > start);
}

/// QWERTY neighbours of lower-case letters and digits.
fn keyboard_neighbours(c: char) -> Option<&'static str> {
    Some(match c {
        'q' => "wa12",
        'w' => "qeasd23",
        'e' => "wrsdf34",
        'r' => "etdfg45",
        't' => "ryfgh56",
        'y' => "tughj67",
        'u' => "yihjk78",
        'i' => "uojkl89",
        'o' => "ipkl90",
        'p' => "ol0",
        'a' => "qwszx",
        's' => "qweadzx",
        'd' => "wersfxc",
        'f' => "ertdgcv",
        'g' => "rtyfhvb",
        'h' => "tyugjbn",
        'j' => "yuihknm",
        'k' => "uiojlm",
        'l' => "iopk",
        'z' => "asx",
        'x' => "zsdc",
        'c' => "xdfv",
        'v' => "cfgb",
        'b' => "vghn",
        'n' => "bhjm",
        'm' => "njk",
        '1' => "2q",
        '2' => "13qw",
        '3' => "24we",
        '4' => "35er",
        '5' => "46rt",
        '6' => "57ty",
        '7' => "68yu",
        '8' => "79ui",
        '9' => "80io",
        '0' => "9op",
        _ => return None,
    })
}

/// A replacement or inserted character for grapheme `g`.
fn noise_char(g: &str, keyboard: bool, rng: &mut OpRng) -> char {
    if keyboard {
        let mut chars = g.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            let lower = c.to_ascii_lowercase();
            if let Some(n) = keyboard_neighbours(lower) {
                let n = n.as_bytes()[rng.below(n.len())] as char;
                return if c.is_ascii_uppercase() {
                    n.to_ascii_uppercase()
                } else {
                    n
                };
            }
        }
    }
    (b'a' + rng.below(26) as u8) as char
}

/// Punctuation removed by `normalize {punctuation: remove}`.
pub fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c,
            '\u{00A1}' | '\u{00A7}' | '\u{00AB}' | '\u{00B6}' | '\u{00B7}' | '\u{00BB}' | '\u{00BF}'
            | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205E}'
            | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}' | '\u{3014}'..='\u{301F}'
            | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF3D}'
            | '\u{FF5B}'..='\u{FF65}')
}

/// ASCII replacement of typographic punctuation for `normalize {punctuation: ascii}`.
fn ascii_punctuation(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' => "'",
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{00AB}'
        | '\u{00BB}' => "\"",
        '\u{2010}'..='\u{2015}' | '\u{2212}' => "-",
        '\u{2026}' => "...",
        '\u{2039}' => "<",
        '\u{203A}' => ">",
        '\u{00A0}' => " ",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::augment::config::AugmentOp;

    fn pipeline(ops: Vec<AugmentOp>) -> TextPipeline {
        TextPipeline::new(&ops, &HashMap::new())
    }

    fn run(p: &TextPipeline, text: &str, key: u64) -> String {
        let mut s = TextScratch::default();
        p.apply(text, key, &mut s);
        s.out
    }

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn no_ops_collapses_white_space_only() {
        let p = pipeline(vec![]);
        assert_eq!(run(&p, "  a\u{3000}b\t\nc  ", 1), "a b c");
    }

    #[test]
    fn deletion_rate_is_within_binomial_bound() {
        let p = pipeline(vec![AugmentOp::WordDeletion { rate: 0.3, p: 1.0 }]);
        let text: String = (0..100).map(|i| format!("w{i} ")).collect();
        let mut deleted = 0usize;
        let trials = 400;
        for key in 0..trials {
            deleted += 100 - words(&run(&p, &text, key)).len();
        }
        // n = 40,000 Bernoulli(0.3): sd = sqrt(n·0.3·0.7) ≈ 91.7; allow 5 sd.
        let expect = 0.3 * 40_000.0;
        assert!(
            (deleted as f64 - expect).abs() < 5.0 * 91.7,
            "deleted {deleted}"
        );
    }

    #[test]
    fn deletion_keeps_order_and_at_least_one_word() {
        let p = pipeline(vec![AugmentOp::WordDeletion { rate: 1.0, p: 1.0 }]);
        for key in 0..50 {
            let out = run(&p, "one two three", key);
            assert_eq!(words(&out).len(), 1);
            assert!(["one", "two", "three"].contains(&out.as_str()));
        }
        let p = pipeline(vec![AugmentOp::WordDeletion { rate: 0.5, p: 1.0 }]);
        let text = "a b c d e f g h i j";
        for key in 0..50 {
            let out = run(&p, text, key);
            let w = words(&out);
            let mut sorted = w.clone();
            sorted.sort();
            assert_eq!(w, sorted, "order kept");
        }
    }

    #[test]
    fn swap_keeps_the_multiset_and_moves_exactly_two_words() {
        let p = pipeline(vec![AugmentOp::WordSwap { n: 1, p: 1.0 }]);
        let text = "a b c d e f";
        for key in 0..100 {
            let out = run(&p, text, key);
            let w = words(&out);
            let moved = w.iter().zip(words(text)).filter(|(x, y)| *x != y).count();
            assert_eq!(moved, 2, "{out}");
            let mut sorted = w.clone();
            sorted.sort();
            assert_eq!(sorted, words(text));
        }
    }

    #[test]
    fn insertion_adds_words_from_the_record() {
        let p = pipeline(vec![AugmentOp::WordInsertion { n: 3, p: 1.0 }]);
        for key in 0..50 {
            let out = run(&p, "red green blue", key);
            let w = words(&out);
            assert_eq!(w.len(), 6);
            assert!(w.iter().all(|x| ["red", "green", "blue"].contains(x)));
        }
    }

    #[test]
    fn synonyms_replace_up_to_n_known_words() {
        let syn = Arc::new(Synonyms::parse("quick\tfast\tspeedy\ndog\thound\n", false).unwrap());
        let ops = vec![AugmentOp::SynonymReplacement {
            path: "x".into(),
            n: 1,
            p: 1.0,
        }];
        let p = TextPipeline::new(&ops, &HashMap::from([(0, syn)]));
        let mut seen = std::collections::HashSet::new();
        for key in 0..100 {
            let out = run(&p, "The Quick brown dog", key);
            let w = words(&out);
            assert_eq!(w.len(), 4);
            let changed: Vec<_> = w
                .iter()
                .zip(words("The Quick brown dog"))
                .filter(|(a, b)| *a != b)
                .collect();
            assert_eq!(changed.len(), 1, "{out}");
            seen.insert(out.clone());
        }
        // Quick→fast, Quick→speedy (lower-case lookup), dog→hound.
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    #[test]
    fn synonyms_parse_json_and_reject_garbage() {
        let s = Synonyms::parse(r#"{"big": ["large", "huge"]}"#, true).unwrap();
        assert_eq!(s.get("big").unwrap().len(), 2);
        assert!(Synonyms::parse("only-one-field\n", false).is_err());
        assert!(Synonyms::parse("[1, 2]", true).is_err());
        assert!(Synonyms::parse("", false).is_err());
    }

    #[test]
    fn span_crop_is_a_contiguous_span_of_configured_length() {
        let p = pipeline(vec![AugmentOp::SpanCrop {
            min: 0.3,
            max: 0.5,
            p: 1.0,
        }]);
        let text: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
        let joined = text.join(" ");
        for key in 0..100 {
            let out = run(&p, &joined, key);
            let w = words(&out);
            assert!((6..=10).contains(&w.len()), "{}", w.len());
            let first: usize = w[0][1..].parse().unwrap();
            for (k, x) in w.iter().enumerate() {
                assert_eq!(*x, format!("w{}", first + k));
            }
        }
    }

    #[test]
    fn mask_replaces_words_with_the_token() {
        let p = pipeline(vec![AugmentOp::TokenMask {
            rate: 1.0,
            mask_token: "<m>".into(),
            p: 1.0,
        }]);
        assert_eq!(run(&p, "a b c", 3), "<m> <m> <m>");
        let p = pipeline(vec![AugmentOp::TokenMask {
            rate: 0.0,
            mask_token: "<m>".into(),
            p: 1.0,
        }]);
        assert_eq!(run(&p, "a b c", 3), "a b c");
    }

    #[test]
    fn char_noise_at_rate_zero_is_identity_and_never_splits_graphemes() {
        let op = |rate| AugmentOp::CharNoise {
            rate,
            edits: vec![
                CharEdit::Insert,
                CharEdit::Delete,
                CharEdit::Substitute,
                CharEdit::Transpose,
            ],
            keyboard: true,
            p: 1.0,
        };
        let text = "e\u{301}te\u{301} 👩‍👩‍👧 한국어 Hello";
        assert_eq!(run(&pipeline(vec![op(0.0)]), text, 5), text);
        let p = pipeline(vec![op(1.0)]);
        for key in 0..200 {
            let out = run(&p, text, key);
            assert_eq!(words(&out).len(), 4, "no word vanishes: {out}");
            // The family emoji either survives whole or is gone: its parts never appear alone.
            let family = "👩‍👩‍👧";
            let stripped = out.replace(family, "");
            assert!(!stripped.contains('\u{200D}'), "{out}");
        }
    }

    #[test]
    fn keyboard_substitution_uses_neighbours() {
        let p = pipeline(vec![AugmentOp::CharNoise {
            rate: 1.0,
            edits: vec![CharEdit::Substitute],
            keyboard: true,
            p: 1.0,
        }]);
        for key in 0..50 {
            let out = run(&p, "q", key);
            assert!("wa12".contains(&out), "{out}");
        }
    }

    #[test]
    fn normalize_case_and_punctuation() {
        let p = pipeline(vec![AugmentOp::Normalize {
            case: CaseMode::Lower,
            punctuation: PunctuationMode::Remove,
            p: 1.0,
        }]);
        assert_eq!(
            run(&p, "Hello, WORLD! « Ça » — ÉTÉ…", 0),
            "hello world ça été"
        );
        let p = pipeline(vec![AugmentOp::Normalize {
            case: CaseMode::Keep,
            punctuation: PunctuationMode::Ascii,
            p: 1.0,
        }]);
        assert_eq!(run(&p, "“Quoted” – it’s…", 0), "\"Quoted\" - it's...");
    }

    #[test]
    fn probability_zero_skips_the_op() {
        let p = pipeline(vec![AugmentOp::WordDeletion { rate: 1.0, p: 0.0 }]);
        assert_eq!(run(&p, "a b c", 9), "a b c");
    }

    #[test]
    fn same_key_same_output() {
        let p = pipeline(vec![
            AugmentOp::WordDeletion { rate: 0.2, p: 1.0 },
            AugmentOp::WordSwap { n: 2, p: 0.5 },
        ]);
        let text = "the quick brown fox jumps over the lazy dog";
        assert_eq!(run(&p, text, 42), run(&p, text, 42));
        let distinct: std::collections::HashSet<String> =
            (0..30).map(|k| run(&p, text, k)).collect();
        assert!(distinct.len() > 10);
    }
}

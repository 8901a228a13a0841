//! The user-facing configuration of the `augment` stage: the stage settings and the closed set
//! of ops, tagged by `op`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::OnError;

/// Settings of an `augment` stage.
///
/// Every input row becomes `views` augmented rows (plus the untouched row when
/// `keep_original` is set). For each augmented column the ops run in the order listed; every op
/// draws its randomness from its own generator seeded by `(pipeline seed, record id, view,
/// column, op index)`, so the output does not depend on the worker count.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AugmentStageConfig {
    /// Upstream components whose output this stage reads.
    pub inputs: Vec<String>,
    /// Batches augmented at the same time on the shared worker pool (at most this many pool
    /// threads work for this stage at once). Default: the pool size (`runtime.workers`, which
    /// defaults to the number of available cores).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Augmented views made of every input row (K). Output rows of one input row are
    /// consecutive, views `0..K-1` in order.
    #[serde(default = "default_views")]
    pub views: u32,
    /// Also emit the untouched row, after the augmented views, with view index `K` (= `views`).
    /// Image columns ending in `to_tensor` get only that final conversion (no random op).
    #[serde(default)]
    pub keep_original: bool,
    /// The record id column: an integer column (Int8–Int64, UInt8–UInt64) whose value seeds
    /// every random draw of the row. Null ids are bad rows.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Name of the output column holding the view index (UInt32). Must not exist in the input.
    #[serde(default = "default_view_column")]
    pub view_column: String,
    /// Per column, the ordered list of ops applied to it. Every op of a column belongs to one
    /// family: text ops on Utf8/LargeUtf8, image ops on Binary/LargeBinary (encoded PNG, JPEG
    /// or WebP), vector ops on FixedSizeList<Float32>/List<Float32>. Columns not named here pass
    /// through unchanged.
    pub ops: BTreeMap<String, Vec<AugmentOp>>,
    /// Expected length of `List<Float32>` vector columns, by column name; a row of another
    /// length is a bad row. (`FixedSizeList` columns carry their length in their type.)
    #[serde(default)]
    pub dims: BTreeMap<String, usize>,
    /// What to do with a bad row (null or empty text, undecodable image, null or wrong-length
    /// vector, null id): `fail` stops the pipeline naming the row; `skip` drops all its views and
    /// writes the row with the reason to the quarantine.
    #[serde(default)]
    pub on_error: OnError,
    /// Keep input order (default). `false` emits batches as they finish, which makes the row
    /// order (not the rows) depend on scheduling.
    #[serde(default = "default_true")]
    pub ordered: bool,
    /// Capacity in batches of this stage's output channel(s); default `runtime.channel_capacity`.
    #[serde(default)]
    pub buffer: Option<usize>,
}

fn default_views() -> u32 {
    1
}
fn default_id_column() -> String {
    "id".into()
}
fn default_view_column() -> String {
    "view".into()
}
fn default_true() -> bool {
    true
}
fn default_p() -> f64 {
    1.0
}
fn default_n() -> u32 {
    1
}
fn default_mask_token() -> String {
    "[MASK]".into()
}
fn default_char_edits() -> Vec<CharEdit> {
    vec![
        CharEdit::Insert,
        CharEdit::Delete,
        CharEdit::Substitute,
        CharEdit::Transpose,
    ]
}
fn default_crop_scale() -> [f64; 2] {
    [0.08, 1.0]
}
fn default_crop_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
fn default_blur_sigma() -> [f64; 2] {
    [0.1, 2.0]
}
fn default_quality() -> u8 {
    90
}
fn default_std() -> [f32; 3] {
    [1.0, 1.0, 1.0]
}

/// One augmentation op, selected by its `op` key. Every op has `p`, the probability that it is
/// applied to a given view (default 1.0).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AugmentOp {
    // ---- text ----
    /// Text: deletes each word with probability `rate`; if every word would go, one random word
    /// is kept. Words are runs of non-white-space characters (Unicode White_Space).
    WordDeletion {
        /// Probability that each word is deleted, in [0, 1].
        rate: f64,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Text: `n` times, swaps two distinct random words.
    WordSwap {
        /// Number of swaps.
        #[serde(default = "default_n")]
        n: u32,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Text: `n` times, inserts a copy of a random word of the same record at a random position.
    WordInsertion {
        /// Number of insertions.
        #[serde(default = "default_n")]
        n: u32,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Text: replaces up to `n` distinct words that have synonyms with a random synonym.
    SynonymReplacement {
        /// Synonyms file, read once when the pipeline is validated (no network). TSV: one
        /// entry a line, `word<TAB>synonym<TAB>synonym…`; JSON (`.json`, or content starting
        /// with `{`): `{"word": ["synonym", …]}`. Words are looked up as written, then
        /// lower-cased. Relative paths are resolved against the current directory.
        path: PathBuf,
        /// Maximum number of words replaced.
        #[serde(default = "default_n")]
        n: u32,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Text: keeps one random contiguous span of words whose length is a fraction, drawn
    /// uniformly from [`min`, `max`], of the word count (at least one word).
    SpanCrop {
        /// Smallest fraction of words kept, in (0, 1].
        min: f64,
        /// Largest fraction of words kept, in [`min`, 1].
        max: f64,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Text: edits each non-space character (grapheme cluster) with probability `rate`; the
    /// edit is drawn uniformly from `edits`. Never empties a word.
    CharNoise {
        /// Probability that each character is edited, in [0, 1].
        rate: f64,
        /// Allowed edits; default all four.
        #[serde(default = "default_char_edits")]
        edits: Vec<CharEdit>,
        /// Substitute and insert QWERTY keyboard neighbours of the character (letters and
        /// digits; other characters fall back to a random lower-case ASCII letter).
        #[serde(default)]
        keyboard: bool,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Text: replaces each word with `mask_token` with probability `rate`.
    TokenMask {
        /// Probability that each word is masked, in [0, 1].
        rate: f64,
        /// The replacement token.
        #[serde(default = "default_mask_token")]
        mask_token: String,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Text: deterministic normalisation of case and punctuation (white space is always
    /// collapsed to single spaces and trimmed, as by every text op).
    Normalize {
        /// Case mapping (Unicode-aware).
        #[serde(default)]
        case: CaseMode,
        /// Punctuation handling.
        #[serde(default)]
        punctuation: PunctuationMode,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },

    // ---- image ----
    /// Image: crops a random area (fraction of the image drawn from `scale`, aspect ratio
    /// log-uniform in `ratio`) and resizes it to `size`, as torchvision's `RandomResizedCrop`
    /// (10 tries, then a centre crop). Bilinear, anti-aliased.
    RandomResizedCrop {
        /// Output `[height, width]` in pixels.
        size: [u32; 2],
        /// Range of the cropped area as a fraction of the image area, within (0, 1].
        #[serde(default = "default_crop_scale")]
        scale: [f64; 2],
        /// Range of the crop's aspect ratio (width / height), > 0.
        #[serde(default = "default_crop_ratio")]
        ratio: [f64; 2],
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Image: mirrors left–right.
    HorizontalFlip {
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Image: mirrors top–bottom.
    VerticalFlip {
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Image: rotates about the centre by an angle drawn uniformly from `degrees`
    /// (counter-clockwise), keeping the size; uncovered pixels get `fill`. Nearest neighbour.
    Rotation {
        /// `[min, max]` angle in degrees.
        degrees: [f64; 2],
        /// RGB colour of uncovered pixels.
        #[serde(default)]
        fill: [u8; 3],
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Image: random brightness, contrast, saturation and hue, in a random order, as
    /// torchvision's `ColorJitter`: factors drawn from [max(0, 1 − x), 1 + x], hue shift from
    /// [−hue, hue]. A zero disables that adjustment.
    ColorJitter {
        /// Brightness strength, ≥ 0.
        #[serde(default)]
        brightness: f64,
        /// Contrast strength, ≥ 0.
        #[serde(default)]
        contrast: f64,
        /// Saturation strength, ≥ 0.
        #[serde(default)]
        saturation: f64,
        /// Hue shift strength, in [0, 0.5] (fraction of the colour circle).
        #[serde(default)]
        hue: f64,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Image: converts to grey (ITU-R 601-2 luma), kept as three equal channels.
    Grayscale {
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Image: gaussian blur with a standard deviation drawn uniformly from `sigma`.
    GaussianBlur {
        /// `[min, max]` standard deviation in pixels, > 0.
        #[serde(default = "default_blur_sigma")]
        sigma: [f64; 2],
        /// Odd kernel size; default `2·ceil(3σ) + 1` for the drawn σ.
        #[serde(default)]
        kernel_size: Option<u32>,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Image: resizes to `size` (bilinear, anti-aliased), ignoring the aspect ratio.
    Resize {
        /// Output `[height, width]` in pixels.
        size: [u32; 2],
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Image, last op only: the column's output is the image re-encoded in `format`. Without
    /// `encode` or `to_tensor`, image columns are re-encoded as PNG.
    Encode {
        /// Output format.
        format: ImageEncoding,
        /// JPEG quality, 1–100 (ignored by PNG and WebP, which are lossless).
        #[serde(default = "default_quality")]
        quality: u8,
    },
    /// Image, last op only: the column's output is a float tensor
    /// `FixedSizeList<Float32, 3·height·width>` ready for an image model: the image resized to
    /// `size` when it is not already that size, scaled to [0, 1], then `(x − mean) / std` per
    /// channel, in `layout` order.
    ToTensor {
        /// `[height, width]` of the tensor.
        size: [u32; 2],
        /// Per-channel (R, G, B) mean subtracted after scaling to [0, 1].
        #[serde(default)]
        mean: [f32; 3],
        /// Per-channel (R, G, B) divisor, > 0.
        #[serde(default = "default_std")]
        std: [f32; 3],
        /// Element order of each row's tensor.
        #[serde(default)]
        layout: TensorLayout,
    },

    // ---- vector ----
    /// Vector: adds independent gaussian noise of standard deviation `sigma` to every component.
    GaussianNoise {
        /// Standard deviation, ≥ 0.
        sigma: f64,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Vector: sets each component to zero with probability `rate`.
    Dropout {
        /// Probability that each component is zeroed, in [0, 1).
        rate: f64,
        /// Multiply kept components by `1 / (1 − rate)` (inverted dropout).
        #[serde(default)]
        rescale: bool,
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Vector: multiplies the whole vector by a factor drawn uniformly from `scale`.
    RandomScaling {
        /// `[min, max]` factor.
        scale: [f64; 2],
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
    /// Vector: rescales to unit L2 norm (an all-zero vector stays zero).
    L2Normalize {
        /// Probability that the op is applied, in [0, 1].
        #[serde(default = "default_p")]
        p: f64,
    },
}

/// One kind of character edit of `char_noise`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CharEdit {
    /// Insert a character after this one.
    Insert,
    /// Delete this character.
    Delete,
    /// Replace this character.
    Substitute,
    /// Swap this character with the next one of the same word.
    Transpose,
}

/// Case mapping of `normalize`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CaseMode {
    /// Leave case alone (default).
    #[default]
    Keep,
    /// Unicode lower case.
    Lower,
    /// Unicode upper case.
    Upper,
}

/// Punctuation handling of `normalize`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PunctuationMode {
    /// Leave punctuation alone (default).
    #[default]
    Keep,
    /// Remove punctuation characters (ASCII punctuation and the Unicode General Punctuation,
    /// CJK Symbols and Punctuation and Latin-1 punctuation blocks).
    Remove,
    /// Map typographic punctuation to ASCII (curly quotes, dashes, ellipsis, guillemets).
    Ascii,
}

/// Output format of `encode`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ImageEncoding {
    /// PNG (lossless, 8-bit RGB).
    Png,
    /// Baseline JPEG at `quality`.
    Jpeg,
    /// Lossless WebP.
    Webp,
}

/// Element order of a `to_tensor` row.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TensorLayout {
    /// Channels first: each row is `[3, height, width]`; a batch of rows reads as NCHW.
    #[default]
    Nchw,
    /// Channels last: each row is `[height, width, 3]`; a batch of rows reads as NHWC.
    Nhwc,
}

/// The kind of column an op works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpFamily {
    /// UTF-8 text.
    Text,
    /// Encoded images.
    Image,
    /// Float32 vectors.
    Vector,
}

impl OpFamily {
    /// How the family is named in messages.
    pub fn describe(self) -> &'static str {
        match self {
            OpFamily::Text => "a text op (needs Utf8 or LargeUtf8)",
            OpFamily::Image => "an image op (needs Binary or LargeBinary)",
            OpFamily::Vector => "a vector op (needs FixedSizeList<Float32> or List<Float32>)",
        }
    }
}

impl AugmentOp {
    /// The `op` name as written in YAML.
    pub fn name(&self) -> &'static str {
        use AugmentOp::*;
        match self {
            WordDeletion { .. } => "word_deletion",
            WordSwap { .. } => "word_swap",
            WordInsertion { .. } => "word_insertion",
            SynonymReplacement { .. } => "synonym_replacement",
            SpanCrop { .. } => "span_crop",
            CharNoise { .. } => "char_noise",
            TokenMask { .. } => "token_mask",
            Normalize { .. } => "normalize",
            RandomResizedCrop { .. } => "random_resized_crop",
            HorizontalFlip { .. } => "horizontal_flip",
            VerticalFlip { .. } => "vertical_flip",
            Rotation { .. } => "rotation",
            ColorJitter { .. } => "color_jitter",
            Grayscale { .. } => "grayscale",
            GaussianBlur { .. } => "gaussian_blur",
            Resize { .. } => "resize",
            Encode { .. } => "encode",
            ToTensor { .. } => "to_tensor",
            GaussianNoise { .. } => "gaussian_noise",
            Dropout { .. } => "dropout",
            RandomScaling { .. } => "random_scaling",
            L2Normalize { .. } => "l2_normalize",
        }
    }

    /// The column family the op works on.
    pub fn family(&self) -> OpFamily {
        use AugmentOp::*;
        match self {
            WordDeletion { .. }
            | WordSwap { .. }
            | WordInsertion { .. }
            | SynonymReplacement { .. }
            | SpanCrop { .. }
            | CharNoise { .. }
            | TokenMask { .. }
            | Normalize { .. } => OpFamily::Text,
            RandomResizedCrop { .. }
            | HorizontalFlip { .. }
            | VerticalFlip { .. }
            | Rotation { .. }
            | ColorJitter { .. }
            | Grayscale { .. }
            | GaussianBlur { .. }
            | Resize { .. }
            | Encode { .. }
            | ToTensor { .. } => OpFamily::Image,
            GaussianNoise { .. } | Dropout { .. } | RandomScaling { .. } | L2Normalize { .. } => {
                OpFamily::Vector
            }
        }
    }

    /// The probability that the op is applied (1 for the terminal image ops).
    pub fn p(&self) -> f64 {
        use AugmentOp::*;
        match self {
            WordDeletion { p, .. }
            | WordSwap { p, .. }
            | WordInsertion { p, .. }
            | SynonymReplacement { p, .. }
            | SpanCrop { p, .. }
            | CharNoise { p, .. }
            | TokenMask { p, .. }
            | Normalize { p, .. }
            | RandomResizedCrop { p, .. }
            | HorizontalFlip { p }
            | VerticalFlip { p }
            | Rotation { p, .. }
            | ColorJitter { p, .. }
            | Grayscale { p }
            | GaussianBlur { p, .. }
            | Resize { p, .. }
            | GaussianNoise { p, .. }
            | Dropout { p, .. }
            | RandomScaling { p, .. }
            | L2Normalize { p } => *p,
            Encode { .. } | ToTensor { .. } => 1.0,
        }
    }

    /// Whether the op decides the column's output encoding (must be last).
    pub fn is_terminal(&self) -> bool {
        matches!(self, AugmentOp::Encode { .. } | AugmentOp::ToTensor { .. })
    }

    /// Parameter problems: `(key inside the op, message)`.
    pub fn check(&self) -> Vec<(String, String)> {
        use AugmentOp::*;
        let mut out = Vec::new();
        let mut unit = |key: &str, v: f64| {
            if !(0.0..=1.0).contains(&v) {
                out.push((key.to_string(), format!("must be in [0, 1], got {v}")));
            }
        };
        unit("p", self.p());
        match self {
            WordDeletion { rate, .. } | CharNoise { rate, .. } | TokenMask { rate, .. } => {
                unit("rate", *rate)
            }
            Dropout { rate, .. } => {
                unit("rate", *rate);
                if *rate >= 1.0 {
                    out.push(("rate".into(), "must be below 1".into()));
                }
            }
            _ => {}
        }
        let mut range = |key: &str, lo: f64, hi: f64, min_ok: &dyn Fn(f64) -> bool, want: &str| {
            if !lo.is_finite() || !hi.is_finite() {
                out.push((key.into(), "must be finite".into()));
            } else if lo > hi {
                out.push((key.into(), format!("min ({lo}) is above max ({hi})")));
            } else if !min_ok(lo) || !min_ok(hi) {
                out.push((key.into(), format!("must be {want}, got [{lo}, {hi}]")));
            }
        };
        match self {
            SpanCrop { min, max, .. } => {
                range("min", *min, *max, &|v| v > 0.0 && v <= 1.0, "in (0, 1]")
            }
            RandomResizedCrop { scale, ratio, .. } => {
                range(
                    "scale",
                    scale[0],
                    scale[1],
                    &|v| v > 0.0 && v <= 1.0,
                    "in (0, 1]",
                );
                range("ratio", ratio[0], ratio[1], &|v| v > 0.0, "> 0");
            }
            Rotation { degrees, .. } => range("degrees", degrees[0], degrees[1], &|_| true, ""),
            GaussianBlur { sigma, .. } => range("sigma", sigma[0], sigma[1], &|v| v > 0.0, "> 0"),
            RandomScaling { scale, .. } => range("scale", scale[0], scale[1], &|_| true, ""),
            _ => {}
        }
        let mut nonneg = |key: &str, v: f64| {
            if !(v.is_finite() && v >= 0.0) {
                out.push((key.to_string(), format!("must be finite and >= 0, got {v}")));
            }
        };
        match self {
            ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
                ..
            } => {
                nonneg("brightness", *brightness);
                nonneg("contrast", *contrast);
                nonneg("saturation", *saturation);
                if !(0.0..=0.5).contains(hue) {
                    out.push(("hue".into(), format!("must be in [0, 0.5], got {hue}")));
                }
            }
            GaussianNoise { sigma, .. } => nonneg("sigma", *sigma),
            _ => {}
        }
        match self {
            RandomResizedCrop { size, .. } | Resize { size, .. } | ToTensor { size, .. } => {
                if size[0] == 0 || size[1] == 0 {
                    out.push(("size".into(), format!("must be > 0, got {size:?}")));
                } else if size[0] as u64 * size[1] as u64 > 1 << 26 {
                    out.push(("size".into(), format!("is too large: {size:?}")));
                }
            }
            _ => {}
        }
        match self {
            CharNoise { edits, .. } if edits.is_empty() => {
                out.push(("edits".into(), "needs at least one edit".into()))
            }
            TokenMask { mask_token, .. } if mask_token.trim().is_empty() => {
                out.push(("mask_token".into(), "must not be empty".into()))
            }
            GaussianBlur {
                kernel_size: Some(k),
                ..
            } if *k % 2 == 0 || *k > 255 => out.push((
                "kernel_size".into(),
                format!("must be odd and at most 255, got {k}"),
            )),
            Encode { quality, .. } if !(1..=100).contains(quality) => out.push((
                "quality".into(),
                format!("must be in 1..=100, got {quality}"),
            )),
            ToTensor { std, .. } if std.iter().any(|s| !s.is_finite() || *s <= 0.0) => {
                out.push(("std".into(), format!("must be > 0, got {std:?}")))
            }
            _ => {}
        }
        out
    }
}

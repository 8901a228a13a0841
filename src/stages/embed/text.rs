//! Tokenisation with a HuggingFace `tokenizer.json`.
//!
//! The file's own padding is switched off (tripline pads each model batch to its longest row
//! itself, after sorting rows by length) and truncation is set to `max_length` tokens,
//! special tokens included, keeping the start of the text — the same as Python `tokenizers`
//! with `no_padding()` and `enable_truncation(max_length)`.

use std::path::Path;

use tokenizers::{PostProcessor, Tokenizer, TruncationParams};

/// One tokenised text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Token type (segment) ids, all 0 for a single text.
    pub type_ids: Vec<u32>,
    /// Whether the text was cut at `max_length`.
    pub truncated: bool,
}

/// A tokenizer configured for embedding: no padding, truncation at `max_length`.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_length: usize,
    pad_id: u32,
}

/// Longest input when neither the configuration nor the tokenizer file says (BERT's limit).
pub const DEFAULT_MAX_LENGTH: usize = 512;

impl TextEncoder {
    /// Loads `path`. `max_length` defaults to the file's truncation length, else
    /// [`DEFAULT_MAX_LENGTH`].
    ///
    /// # Errors
    /// A message naming the file when it is missing or not a valid `tokenizer.json`, or when
    /// `max_length` is too small to hold the special tokens.
    pub fn load(path: &Path, max_length: Option<usize>) -> Result<TextEncoder, String> {
        if !path.is_file() {
            return Err(format!(
                "tokenizer file `{}` does not exist (for the quickstart model run \
                 scripts/fetch-model.sh)",
                path.display()
            ));
        }
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| {
            format!(
                "`{}` is not a valid HuggingFace tokenizer.json: {e}",
                path.display()
            )
        })?;
        let max_length = max_length
            .or_else(|| tokenizer.get_truncation().map(|t| t.max_length))
            .unwrap_or(DEFAULT_MAX_LENGTH);
        let pad_id = tokenizer.get_padding().map_or(0, |p| p.pad_id);
        tokenizer.with_padding(None);
        let specials = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if max_length <= specials {
            return Err(format!(
                "max_length {max_length} leaves no room for text: the tokenizer adds {specials} \
                 special tokens"
            ));
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| format!("setting truncation to {max_length}: {e}"))?;
        Ok(TextEncoder {
            tokenizer,
            max_length,
            pad_id,
        })
    }

    /// The truncation length in tokens.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id used for padding (from the file's padding settings, else 0).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Tokenises `texts` (in parallel when the `tokenizers` thread pool allows).
    ///
    /// # Errors
    /// The tokenizer's message when a text cannot be tokenised.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Encoded>, String> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| format!("tokenising: {e}"))?;
        Ok(encodings
            .into_iter()
            .map(|e| Encoded {
                truncated: !e.get_overflowing().is_empty(),
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
            })
            .collect())
    }
}

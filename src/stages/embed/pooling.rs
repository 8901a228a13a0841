//! Pooling token states into one vector per row, and L2 normalisation.
//!
//! Definitions match sentence-transformers: masked mean divides by the number of unmasked
//! tokens (clamped below at 1e-9), `cls` takes the first token, normalisation divides by the
//! L2 norm clamped below at 1e-12 (`torch.nn.functional.normalize`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How token states become one vector per row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean of the token states whose attention mask is 1 (text); over all positions for
    /// models without a mask. The model output must be `[batch, tokens, dim]`.
    #[default]
    Mean,
    /// The first token's state (`[CLS]`). The model output must be `[batch, tokens, dim]`.
    Cls,
    /// The model already pools: its output is `[batch, dim]`.
    None,
}

/// Pools `hidden` (`rows × tokens × dim`, row-major) into `out` (`rows × dim`).
///
/// `mask` (`rows × tokens`, 0/1) selects the tokens averaged by [`Pooling::Mean`]; without a
/// mask every token counts. For [`Pooling::None`], `tokens` must be 1.
///
/// # Panics
/// When the slices' lengths do not match the given sizes.
pub fn pool(
    pooling: Pooling,
    hidden: &[f32],
    mask: Option<&[i64]>,
    rows: usize,
    tokens: usize,
    dim: usize,
    out: &mut [f32],
) {
    assert_eq!(hidden.len(), rows * tokens * dim, "hidden states size");
    assert_eq!(out.len(), rows * dim, "output size");
    if let Some(m) = mask {
        assert_eq!(m.len(), rows * tokens, "mask size");
    }
    match pooling {
        Pooling::None => {
            assert_eq!(tokens, 1, "pooling none expects one vector per row");
            out.copy_from_slice(hidden);
        }
        Pooling::Cls => {
            for r in 0..rows {
                let src = &hidden[r * tokens * dim..r * tokens * dim + dim];
                out[r * dim..(r + 1) * dim].copy_from_slice(src);
            }
        }
        Pooling::Mean => {
            for r in 0..rows {
                let acc = &mut out[r * dim..(r + 1) * dim];
                acc.fill(0.0);
                let mut count = 0.0f32;
                for t in 0..tokens {
                    let w = mask.map_or(1, |m| m[r * tokens + t]);
                    if w == 0 {
                        continue;
                    }
                    let w = w as f32;
                    count += w;
                    let h = &hidden[(r * tokens + t) * dim..(r * tokens + t + 1) * dim];
                    for (a, x) in acc.iter_mut().zip(h) {
                        *a += x * w;
                    }
                }
                let inv = 1.0 / count.max(1e-9);
                for a in acc.iter_mut() {
                    *a *= inv;
                }
            }
        }
    }
}

/// Divides every `dim`-long row of `v` by its L2 norm (clamped below at 1e-12).
pub fn l2_normalize(v: &mut [f32], dim: usize) {
    if dim == 0 {
        return;
    }
    for row in v.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        for x in row.iter_mut() {
            *x /= norm;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two rows, three tokens, dim 2; row 1 has its last token masked out.
    const H: [f32; 12] = [
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, //
        -1.0, 0.5, 2.0, 1.5, 100.0, 100.0,
    ];
    const M: [i64; 6] = [1, 1, 1, 1, 1, 0];

    #[test]
    fn mean_pooling_ignores_masked_tokens() {
        let mut out = [0.0; 4];
        pool(Pooling::Mean, &H, Some(&M), 2, 3, 2, &mut out);
        // Row 0: ((1+3+5)/3, (2+4+6)/3); row 1: ((-1+2)/2, (0.5+1.5)/2).
        assert_eq!(out, [3.0, 4.0, 0.5, 1.0]);
    }

    #[test]
    fn mean_pooling_without_mask_uses_every_token() {
        let mut out = [0.0; 4];
        pool(Pooling::Mean, &H, None, 2, 3, 2, &mut out);
        assert_eq!(out, [3.0, 4.0, 101.0 / 3.0, 102.0 / 3.0]);
    }

    #[test]
    fn cls_takes_the_first_token() {
        let mut out = [0.0; 4];
        pool(Pooling::Cls, &H, Some(&M), 2, 3, 2, &mut out);
        assert_eq!(out, [1.0, 2.0, -1.0, 0.5]);
    }

    #[test]
    fn fully_masked_row_pools_to_zero_not_nan() {
        let mut out = [9.0; 2];
        pool(Pooling::Mean, &H[..6], Some(&[0, 0, 0]), 1, 3, 2, &mut out);
        assert_eq!(out, [0.0, 0.0]);
    }

    #[test]
    fn normalisation_gives_unit_rows_and_keeps_zero_rows() {
        let mut v = [3.0, 4.0, 0.0, 0.0];
        l2_normalize(&mut v, 2);
        assert_eq!(v, [0.6, 0.8, 0.0, 0.0]);
    }
}

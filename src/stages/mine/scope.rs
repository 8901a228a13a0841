//! The records a `mine` stage holds: embeddings in one contiguous `f32` buffer, ids, classes,
//! views, payload references; kept as a FIFO so `window` and `memory_bank` scopes can evict
//! the oldest records, and `global` can hold everything up to its configured limit.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;

/// Class code used when a record has no label.
pub const NO_CLASS: u32 = u32::MAX;

/// A FIFO of records.
#[derive(Debug, Default)]
pub struct Store {
    /// Embedding dimension (0 until the first record).
    pub dim: usize,
    /// Live embeddings, `len × dim`, oldest first.
    pub emb: Vec<f32>,
    /// Ids.
    pub ids: Vec<i64>,
    /// Class codes ([`NO_CLASS`] without labels).
    pub class: Vec<u32>,
    /// View indices (0 without views).
    pub view: Vec<i64>,
    /// Payload hashes (0 without payload).
    pub hash: Vec<u64>,
    /// Payload location: (array slot, row).
    pub loc: Vec<(u32, u32)>,
    /// Payload arrays by slot; a slot is freed when its last record leaves.
    pub arrays: Vec<Option<ArrayRef>>,
    live_per_slot: Vec<usize>,
}

impl Store {
    /// Live records.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Registers a payload array; returns its slot.
    pub fn add_array(&mut self, a: Option<ArrayRef>) -> u32 {
        self.arrays.push(a);
        self.live_per_slot.push(0);
        (self.arrays.len() - 1) as u32
    }

    /// Appends one record.
    pub fn push(
        &mut self,
        emb: &[f32],
        id: i64,
        class: u32,
        view: i64,
        hash: u64,
        loc: (u32, u32),
    ) {
        if self.dim == 0 {
            self.dim = emb.len();
        }
        self.emb.extend_from_slice(emb);
        self.ids.push(id);
        self.class.push(class);
        self.view.push(view);
        self.hash.push(hash);
        self.loc.push(loc);
        self.live_per_slot[loc.0 as usize] += 1;
    }

    /// Drops the oldest records so that at most `keep` remain.
    pub fn evict_to(&mut self, keep: usize) {
        let n = self.len().saturating_sub(keep);
        if n == 0 {
            return;
        }
        for &(slot, _) in &self.loc[..n] {
            let live = &mut self.live_per_slot[slot as usize];
            *live -= 1;
            if *live == 0 {
                self.arrays[slot as usize] = None;
            }
        }
        self.emb.drain(..n * self.dim);
        self.ids.drain(..n);
        self.class.drain(..n);
        self.view.drain(..n);
        self.hash.drain(..n);
        self.loc.drain(..n);
    }

    /// Embedding of record `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.emb[r * self.dim..(r + 1) * self.dim]
    }

    /// Whether records `a` and `b` carry exactly the same payload (bytes for string and
    /// binary payloads; the 64-bit hash of the displayed value otherwise).
    pub fn same_payload(&self, a: usize, b: usize) -> bool {
        if self.hash[a] != self.hash[b] || self.hash[a] == 0 {
            return false;
        }
        let (sa, ra) = self.loc[a];
        let (sb, rb) = self.loc[b];
        match (&self.arrays[sa as usize], &self.arrays[sb as usize]) {
            (Some(x), Some(y)) => {
                match (value_bytes(x, ra as usize), value_bytes(y, rb as usize)) {
                    (Some(p), Some(q)) => p == q,
                    _ => true,
                }
            }
            _ => true,
        }
    }
}

/// The bytes of a string or binary value (`None` for other types or nulls).
pub fn value_bytes(a: &ArrayRef, row: usize) -> Option<&[u8]> {
    if a.is_null(row) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => Some(a.as_string::<i32>().value(row).as_bytes()),
        DataType::LargeUtf8 => Some(a.as_string::<i64>().value(row).as_bytes()),
        DataType::Utf8View => Some(a.as_string_view().value(row).as_bytes()),
        DataType::Binary => Some(a.as_binary::<i32>().value(row)),
        DataType::LargeBinary => Some(a.as_binary::<i64>().value(row)),
        DataType::BinaryView => Some(a.as_binary_view().value(row)),
        _ => None,
    }
}

/// A deterministic, non-zero 64-bit hash of a payload value (0 for null).
pub fn payload_hash(a: &ArrayRef, row: usize) -> u64 {
    if a.is_null(row) {
        return 0;
    }
    let mut h = std::hash::DefaultHasher::new();
    match value_bytes(a, row) {
        Some(b) => b.hash(&mut h),
        None => arrow::util::display::array_value_to_string(a, row)
            .unwrap_or_default()
            .hash(&mut h),
    }
    h.finish().max(1)
}

/// Dense class codes for label values, in first-seen order.
#[derive(Debug, Default)]
pub struct Classes {
    codes: HashMap<String, u32>,
    /// Label values by code, as text.
    pub names: Vec<String>,
}

impl Classes {
    /// The code of `label`, assigning the next one if new.
    pub fn code(&mut self, label: &str) -> u32 {
        if let Some(&c) = self.codes.get(label) {
            return c;
        }
        let c = self.names.len() as u32;
        self.codes.insert(label.to_string(), c);
        self.names.push(label.to_string());
        c
    }
}

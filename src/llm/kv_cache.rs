//! The key/value cache of the batched engine, preallocated per sequence and shared by prefix.
//!
//! A [`KvSegment`] holds the keys and values of a run of consecutive positions for every layer,
//! in a buffer allocated once at its full capacity (no concatenation per step). A sequence's cache,
//! [`SeqKv`], is an optional shared prefix segment (the prompt, prefilled once and referenced by
//! every sample of a dense request through an `Arc`, never copied) followed by the sequence's own
//! segment, which receives the positions it decodes. Dropping a finished sequence frees its own
//! segment; the prefix lives as long as one sample still uses it.

use std::sync::Arc;

/// Keys and values of positions `start .. start + len` for all layers and KV heads.
///
/// Layout of `k` and `v`: `[layer][kv_head][position - start][head_dim]`, with room for `cap`
/// positions per (layer, head), so one head's keys are contiguous for the attention loop.
#[derive(Debug)]
pub struct KvSegment {
    start: usize,
    len: usize,
    cap: usize,
    n_kv_head: usize,
    head_dim: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvSegment {
    /// An empty segment for positions from `start`, with room for `cap` of them.
    pub fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        start: usize,
        cap: usize,
    ) -> Self {
        let size = n_layer * n_kv_head * cap * head_dim;
        KvSegment {
            start,
            len: 0,
            cap,
            n_kv_head,
            head_dim,
            k: vec![0.0; size],
            v: vec![0.0; size],
        }
    }

    /// First position held.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Number of positions written (and committed).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions this segment can hold in all.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn offset(&self, layer: usize, kv_head: usize, index: usize) -> usize {
        ((layer * self.n_kv_head + kv_head) * self.cap + index) * self.head_dim
    }

    /// Writes one position's keys and values (`n_kv_head * head_dim` each) at `index` relative to
    /// `start`. The caller commits written positions with [`KvSegment::commit`].
    pub fn write(&mut self, layer: usize, index: usize, k_row: &[f32], v_row: &[f32]) {
        debug_assert!(index < self.cap);
        let hd = self.head_dim;
        for g in 0..self.n_kv_head {
            let o = self.offset(layer, g, index);
            self.k[o..o + hd].copy_from_slice(&k_row[g * hd..(g + 1) * hd]);
            self.v[o..o + hd].copy_from_slice(&v_row[g * hd..(g + 1) * hd]);
        }
    }

    /// Marks `n` more positions as written.
    pub fn commit(&mut self, n: usize) {
        assert!(self.len + n <= self.cap, "KV segment overflow");
        self.len += n;
    }

    /// Keys of one (layer, KV head) for indices `0..n` relative to `start`, `n * head_dim` floats.
    pub fn keys(&self, layer: usize, kv_head: usize, n: usize) -> &[f32] {
        let o = self.offset(layer, kv_head, 0);
        &self.k[o..o + n * self.head_dim]
    }

    /// Values of one (layer, KV head) for indices `0..n` relative to `start`.
    pub fn values(&self, layer: usize, kv_head: usize, n: usize) -> &[f32] {
        let o = self.offset(layer, kv_head, 0);
        &self.v[o..o + n * self.head_dim]
    }

    /// Bytes held by the buffers.
    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * std::mem::size_of::<f32>()
    }
}

/// One sequence's cache: a shared, read-only prefix and the sequence's own growing segment.
#[derive(Debug)]
pub struct SeqKv {
    prefix: Option<Arc<KvSegment>>,
    own: KvSegment,
}

impl SeqKv {
    /// A sequence that starts at position 0 with room for `cap` positions (a prompt to prefill).
    pub fn fresh(n_layer: usize, n_kv_head: usize, head_dim: usize, cap: usize) -> Self {
        SeqKv {
            prefix: None,
            own: KvSegment::new(n_layer, n_kv_head, head_dim, 0, cap),
        }
    }

    /// A sequence continuing after a shared, complete prefix, with room for `cap` more positions.
    pub fn after_prefix(prefix: Arc<KvSegment>, n_layer: usize, cap: usize) -> Self {
        let own = KvSegment::new(
            n_layer,
            prefix.n_kv_head,
            prefix.head_dim,
            prefix.start + prefix.len,
            cap,
        );
        SeqKv {
            prefix: Some(prefix),
            own,
        }
    }

    /// Turns a prefilled sequence into a shareable prefix.
    pub fn into_prefix(self) -> Arc<KvSegment> {
        debug_assert!(
            self.prefix.is_none(),
            "only a fresh sequence becomes a prefix"
        );
        Arc::new(self.own)
    }

    /// Positions held (prefix and own).
    pub fn len(&self) -> usize {
        self.own.start + self.own.len
    }

    /// Whether the sequence holds no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions that can still be appended.
    pub fn room(&self) -> usize {
        self.own.cap - self.own.len
    }

    /// The shared prefix, if any.
    pub fn prefix(&self) -> Option<&KvSegment> {
        self.prefix.as_deref()
    }

    /// The sequence's own segment.
    pub fn own(&self) -> &KvSegment {
        &self.own
    }

    /// The own segment, for writing.
    pub fn own_mut(&mut self) -> &mut KvSegment {
        &mut self.own
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_shared_and_own_positions_continue() {
        let mut seq = SeqKv::fresh(2, 2, 4, 3);
        let k: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let v: Vec<f32> = (0..8).map(|x| -(x as f32)).collect();
        for layer in 0..2 {
            for i in 0..3 {
                seq.own_mut().write(layer, i, &k, &v);
            }
        }
        seq.own_mut().commit(3);
        assert_eq!(seq.len(), 3);
        assert_eq!(seq.room(), 0);
        let prefix = seq.into_prefix();
        let a = SeqKv::after_prefix(prefix.clone(), 2, 5);
        let b = SeqKv::after_prefix(prefix.clone(), 2, 5);
        assert_eq!(Arc::strong_count(&prefix), 3);
        assert_eq!((a.len(), a.own().start(), b.room()), (3, 3, 5));
        // Head 1 of layer 1 holds the second half of each written row.
        assert_eq!(a.prefix().unwrap().keys(1, 1, 1), &[4.0, 5.0, 6.0, 7.0]);
        assert_eq!(
            &a.prefix().unwrap().values(1, 0, 2)[4..],
            &[-0.0, -1.0, -2.0, -3.0]
        );
    }

    #[test]
    #[should_panic(expected = "overflow")]
    fn commit_past_capacity_panics() {
        let mut seq = SeqKv::fresh(1, 1, 2, 1);
        seq.own_mut().commit(2);
    }
}

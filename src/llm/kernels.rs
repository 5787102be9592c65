//! The CPU matmul kernel: block-quantized weights kept at (nearly) their GGUF size, times
//! activation rows quantized to int8, with AVX-512 VNNI integer dot products.
//!
//! Decoding one token streams every weight once, so its speed is the bytes read per token; a
//! batch of rows (dense sampling, prefill) reuses each weight for many rows, so there the integer
//! throughput counts. Both are served like ggml's `vec_dot` kernels: at load, each GGUF tensor is
//! repacked (not re-quantized) into [`PackedWeight`], blocks of 32 unsigned 4-, 5- or 8-bit values
//! `u` with a scale `d` and either a per-block minimum `m` (`w = d·u + m`: Q4_1, Q5_1, Q4_K) or a
//! fixed offset (`w = d·(u − o)`: Q4_0, Q5_0, Q8_0). Types without such a form (Q6_K, Q2_K…,
//! f16/f32 weights) are quantized to 8-bit blocks (the precision of Q8_0). Activations are
//! quantized per matmul to int8 blocks of 32 with their own scale (as llama.cpp's Q8_0/Q8_K), and
//! each block's dot product is exact integer arithmetic (`vpdpbusd`), scaled and accumulated in
//! f32. One register-tiled routine serves every batch size, and the operations a row goes through
//! do not depend on how many rows share its batch, so a token's numbers are bit-identical alone
//! and batched (batches of more than 4 rows unpack a tile's 4/5-bit values to bytes once, an exact
//! step, and reuse them). The 4 rows of a tile are stored interleaved pair by pair, so each tile,
//! and each thread's run of tiles, is read as one sequential stream. Work is split over 4-row
//! weight tiles on candle's CPU pool (the engine's thread budget); [`matmul_many`] serves weights
//! that share an input (q/k/v, gate/up) in one pass.

use half::f16;

/// Values per quantization block.
pub const BLOCK: usize = 32;
/// Two blocks are processed per 512-bit vector.
const PAIR: usize = 2 * BLOCK;
/// Weight rows per register tile.
const TILE_N: usize = 4;
/// Activation rows per register tile.
const TILE_M: usize = 4;
/// How far ahead (in block pairs) the kernel prefetches weights.
const PREFETCH_PAIRS: usize = 16;

/// Bits per stored weight value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bits {
    B4,
    B5,
    B8,
}

impl Bits {
    /// Bytes of one pair of blocks: nibbles (+ 64 high bits for B5), or 64 bytes for B8.
    fn pair_bytes(self) -> usize {
        match self {
            Bits::B4 => 32,
            Bits::B5 => 40,
            Bits::B8 => 64,
        }
    }
}

/// How a block's unsigned values map to weights.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Affine {
    /// `w = d·(u − offset)`.
    Offset(f32),
    /// `w = d·u + m` with a stored `m` per block.
    Min,
}

/// A weight matrix (n rows × k) repacked for [`PackedWeight::matmul`].
pub struct PackedWeight {
    n: usize,
    k: usize,
    /// Block pairs per row (the last block is zero padding when k/32 is odd).
    pairs: usize,
    bits: Bits,
    affine: Affine,
    /// Tile-interleaved: for each 4-row tile, for each pair, the 4 rows' `bits.pair_bytes()`
    /// bytes one after the other, so a tile (and a thread's run of tiles) is one sequential
    /// stream. Rows past n are zero padding.
    vals: Vec<u8>,
    /// Scales and minimums are tile-interleaved like `vals`: for each tile and pair, 4 rows × 2
    /// blocks (see [`PackedWeight::scale_index`]).
    ///
    /// The scale ([`Affine::Min`]; empty otherwise).
    d: Vec<f32>,
    /// The scale as f16 bits ([`Affine::Offset`], whose scales are f16 in
    /// every source; empty otherwise).
    d16: Vec<u16>,
    /// The minimum (empty for [`Affine::Offset`]).
    m: Vec<f32>,
}

/// Why a tensor cannot be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("inner dimension {k} is not a multiple of the {block}-value block")]
    Shape { k: usize, block: usize },
    #[error("{got} bytes of {dtype:?} data, expected {expected}")]
    Size {
        dtype: candle_core::quantized::GgmlDType,
        got: usize,
        expected: usize,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// One block decoded to unsigned values plus its scale and minimum (0 for offset forms).
type BlockOut<'a> = (&'a mut [u8; BLOCK], &'a mut f32, &'a mut f32);

impl PackedWeight {
    /// Whether this CPU runs the kernel (AVX-512 F/BW/VL and VNNI).
    pub fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Inner dimension.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bytes the packed weights occupy (what one single-row matmul reads).
    pub fn size_in_bytes(&self) -> usize {
        self.vals.len() + 4 * (self.d.len() + self.m.len()) + 2 * self.d16.len()
    }

    /// Whether [`from_ggml`](Self::from_ggml) keeps a type's values exactly (else it
    /// re-quantizes them to 8-bit blocks).
    pub fn repacks_exactly(dtype: candle_core::quantized::GgmlDType) -> bool {
        use candle_core::quantized::GgmlDType as T;
        matches!(
            dtype,
            T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 | T::Q4K
        )
    }

    /// Packs a GGUF tensor of `n` rows × `k` from its raw bytes. Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and
    /// Q4_K are repacked exactly; every other type is dequantized by candle and quantized to
    /// 8-bit blocks. Rows are packed in parallel on candle's CPU pool.
    pub fn from_ggml(
        dtype: candle_core::quantized::GgmlDType,
        data: &[u8],
        n: usize,
        k: usize,
    ) -> Result<Self, PackError> {
        use candle_core::quantized::GgmlDType as T;
        if !k.is_multiple_of(dtype.block_size()) || !k.is_multiple_of(BLOCK) {
            return Err(PackError::Shape {
                k,
                block: dtype.block_size().max(BLOCK),
            });
        }
        let expected = n * k / dtype.block_size() * dtype.type_size();
        if data.len() != expected {
            return Err(PackError::Size {
                dtype,
                got: data.len(),
                expected,
            });
        }
        let row_bytes = expected / n.max(1);
        let row = |r: usize| &data[r * row_bytes..(r + 1) * row_bytes];
        let pack = |bits, affine, decode: fn(&[u8], usize, BlockOut<'_>)| {
            Self::build(n, k, bits, affine, &|r, b, out| decode(row(r), b, out))
        };
        Ok(match dtype {
            T::Q4_0 => pack(Bits::B4, Affine::Offset(8.0), decode_q4_0),
            T::Q4_1 => pack(Bits::B4, Affine::Min, decode_q4_1),
            T::Q5_0 => pack(Bits::B5, Affine::Offset(16.0), decode_q5_0),
            T::Q5_1 => pack(Bits::B5, Affine::Min, decode_q5_1),
            T::Q8_0 => pack(Bits::B8, Affine::Offset(128.0), decode_q8_0),
            T::Q4K => pack(Bits::B4, Affine::Min, decode_q4_k),
            _ => {
                let storage = candle_core::quantized::QStorage::from_data(
                    std::borrow::Cow::Borrowed(data),
                    &candle_core::Device::Cpu,
                    dtype,
                )?;
                let qt = candle_core::quantized::QTensor::new(storage, (n, k))?;
                let f = qt
                    .dequantize(&candle_core::Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                return Ok(Self::from_f32(&f, n, k).expect("k checked above"));
            }
        })
    }

    /// Quantizes a row-major (n × k) f32 matrix to 8-bit blocks; `None` when k is not a
    /// multiple of 32 or the length does not match.
    pub fn from_f32(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(BLOCK) || w.len() != n * k {
            return None;
        }
        Some(Self::build(
            n,
            k,
            Bits::B8,
            Affine::Offset(128.0),
            &|r, b, (u, d, _)| {
                let src = &w[r * k + b * BLOCK..r * k + (b + 1) * BLOCK];
                let amax = src.iter().fold(0f32, |a, &v| a.max(v.abs()));
                // The scale is stored as f16 (as Q8_0's): quantize with the rounded one.
                *d = f16::from_f32(amax / 127.0).to_f32();
                let inv = if *d > 0.0 { 1.0 / *d } else { 0.0 };
                for (o, &v) in u.iter_mut().zip(src) {
                    *o = (round_even(v * inv).clamp(-127.0, 127.0) as i32 + 128) as u8;
                }
            },
        ))
    }

    /// Lays out blocks produced by `decode(row, block, out)`, rows in parallel.
    fn build<F: Fn(usize, usize, BlockOut<'_>) + Sync>(
        n: usize,
        k: usize,
        bits: Bits,
        affine: Affine,
        decode: &F,
    ) -> Self {
        let nb = k / BLOCK;
        let pairs = nb.div_ceil(2);
        let pb = bits.pair_bytes();
        let n_pad = n.div_ceil(TILE_N) * TILE_N;
        let mut vals = vec![0u8; n_pad * pairs * pb];
        let mut d = vec![0f32; n_pad * pairs * 2];
        let mut m = vec![
            0f32;
            if affine == Affine::Min {
                n_pad * pairs * 2
            } else {
                0
            }
        ];
        let (vp, dp, mp) = (
            SharedPtr(vals.as_mut_ptr()),
            SharedPtr(d.as_mut_ptr()),
            SharedPtr(m.as_mut_ptr()),
        );
        let has_min = affine == Affine::Min;
        let run = |range: std::ops::Range<usize>| {
            // Rebinding makes the closure capture the Sync wrappers, not their fields.
            #[allow(clippy::redundant_locals)]
            let (vp, dp, mp) = (vp, dp, mp);
            let mut u = [0u8; BLOCK];
            for r in range {
                let mut scratch_m = 0f32;
                for b in 0..nb {
                    let (p, half) = (b / 2, b % 2);
                    let si = scale_index(pairs, r, b);
                    // SAFETY: row r alone writes its pairs and scales (disjoint across rows).
                    let (pair, dref, mref) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(
                                vp.0.add(pair_offset(pairs, pb, r, p)),
                                pb,
                            ),
                            &mut *dp.0.add(si),
                            if has_min {
                                &mut *mp.0.add(si)
                            } else {
                                &mut scratch_m
                            },
                        )
                    };
                    decode(r, b, (&mut u, dref, mref));
                    match bits {
                        Bits::B8 => pair[half * BLOCK..(half + 1) * BLOCK].copy_from_slice(&u),
                        Bits::B4 | Bits::B5 => {
                            let shift = 4 * half;
                            let mut high = 0u32;
                            for (t, &v) in u.iter().enumerate() {
                                pair[t] |= (v & 0xF) << shift;
                                high |= (((v >> 4) & 1) as u32) << t;
                            }
                            if bits == Bits::B5 {
                                pair[32 + 4 * half..32 + 4 * half + 4]
                                    .copy_from_slice(&high.to_le_bytes());
                            }
                        }
                    }
                }
            }
        };
        if n < 16 {
            run(0..n);
        } else {
            candle_core::utils::barrier_pool().execute_chunked(n, run);
        }
        let d16 = match affine {
            Affine::Offset(_) => std::mem::take(&mut d)
                .into_iter()
                .map(|v| f16::from_f32(v).to_bits())
                .collect(),
            Affine::Min => Vec::new(),
        };
        PackedWeight {
            n,
            k,
            pairs,
            bits,
            affine,
            vals,
            d,
            d16,
            m,
        }
    }

    fn scale_at(&self, i: usize) -> f32 {
        match self.affine {
            Affine::Offset(_) => f16::from_bits(self.d16[i]).to_f32(),
            Affine::Min => self.d[i],
        }
    }

    /// The weights as f32, row-major (for tests and exports).
    pub fn dequantize(&self) -> Vec<f32> {
        let nb = self.k / BLOCK;
        let pb = self.bits.pair_bytes();
        let mut out = vec![0f32; self.n * self.k];
        for r in 0..self.n {
            for b in 0..nb {
                let (p, half) = (b / 2, b % 2);
                let at = pair_offset(self.pairs, pb, r, p);
                let pair = &self.vals[at..at + pb];
                let si = scale_index(self.pairs, r, b);
                let d = self.scale_at(si);
                for t in 0..BLOCK {
                    let u = match self.bits {
                        Bits::B8 => pair[half * BLOCK + t],
                        Bits::B4 | Bits::B5 => {
                            let mut v = (pair[t] >> (4 * half)) & 0xF;
                            let bit = half * BLOCK + t;
                            if self.bits == Bits::B5 && pair[32 + bit / 8] & (1 << (bit % 8)) != 0 {
                                v |= 0x10;
                            }
                            v
                        }
                    } as f32;
                    out[r * self.k + b * BLOCK + t] = match self.affine {
                        Affine::Offset(o) => d * (u - o),
                        Affine::Min => d * u + self.m[si],
                    };
                }
            }
        }
        out
    }

    /// `out (m × n) = x (m × k) · wᵀ`, quantizing `x` first. Panics when the CPU lacks the
    /// kernel's instructions (check [`supported`](Self::supported)) or on shape mismatch.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let acts = QuantizedActs::new(x, m, self.k);
        self.matmul_quantized(&acts, out);
    }

    /// `out (m × n) = acts · wᵀ` for activations quantized once (several weights may share them).
    pub fn matmul_quantized(&self, acts: &QuantizedActs, out: &mut [f32]) {
        matmul_many(&[self], acts, &mut [out]);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile_all_rows(&self, t: usize, acts: &QuantizedActs, out: *mut f32) {
        let pb = self.bits.pair_bytes();
        let vals = unsafe { self.vals.as_ptr().add(t * self.pairs * TILE_N * pb) };
        if acts.m <= TILE_M || self.bits == Bits::B8 {
            unsafe { self.tile_rows(self.bits, vals, pb, t, acts, out) };
            return;
        }
        // Several row tiles reuse the weights: unpack the tile to bytes once (an exact
        // conversion, so the numbers do not change) and run the 8-bit path over them.
        thread_local! {
            static UNPACKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        UNPACKED.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.resize(self.pairs * TILE_N * PAIR, 0);
            let dst = scratch.as_mut_ptr();
            unsafe {
                for q in 0..self.pairs * TILE_N {
                    let v = match self.bits {
                        Bits::B4 => unpack::<4>(vals.add(q * pb)),
                        Bits::B5 => unpack::<5>(vals.add(q * pb)),
                        Bits::B8 => unreachable!("8-bit weights are read in place"),
                    };
                    std::arch::x86_64::_mm512_storeu_si512(dst.add(q * PAIR) as *mut _, v);
                }
                self.tile_rows(Bits::B8, dst, PAIR, t, acts, out);
            }
        });
    }

    /// Every activation row tile against weight tile `t`, whose values (`bits` wide, `pb`
    /// bytes per pair) start at `vals`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile_rows(
        &self,
        bits: Bits,
        vals: *const u8,
        pb: usize,
        t: usize,
        acts: &QuantizedActs,
        out: *mut f32,
    ) {
        let mut j = 0;
        while j < acts.m {
            let rows = TILE_M.min(acts.m - j);
            let a = (vals, pb, t, acts, j, out);
            unsafe {
                match (bits, self.affine, rows) {
                    (Bits::B4, Affine::Min, 4) => tile::<4, true, 4>(self, a),
                    (Bits::B4, Affine::Min, 3) => tile::<4, true, 3>(self, a),
                    (Bits::B4, Affine::Min, 2) => tile::<4, true, 2>(self, a),
                    (Bits::B4, Affine::Min, _) => tile::<4, true, 1>(self, a),
                    (Bits::B4, Affine::Offset(_), 4) => tile::<4, false, 4>(self, a),
                    (Bits::B4, Affine::Offset(_), 3) => tile::<4, false, 3>(self, a),
                    (Bits::B4, Affine::Offset(_), 2) => tile::<4, false, 2>(self, a),
                    (Bits::B4, Affine::Offset(_), _) => tile::<4, false, 1>(self, a),
                    (Bits::B5, Affine::Min, 4) => tile::<5, true, 4>(self, a),
                    (Bits::B5, Affine::Min, 3) => tile::<5, true, 3>(self, a),
                    (Bits::B5, Affine::Min, 2) => tile::<5, true, 2>(self, a),
                    (Bits::B5, Affine::Min, _) => tile::<5, true, 1>(self, a),
                    (Bits::B5, Affine::Offset(_), 4) => tile::<5, false, 4>(self, a),
                    (Bits::B5, Affine::Offset(_), 3) => tile::<5, false, 3>(self, a),
                    (Bits::B5, Affine::Offset(_), 2) => tile::<5, false, 2>(self, a),
                    (Bits::B5, Affine::Offset(_), _) => tile::<5, false, 1>(self, a),
                    (Bits::B8, Affine::Min, 4) => tile::<8, true, 4>(self, a),
                    (Bits::B8, Affine::Min, 3) => tile::<8, true, 3>(self, a),
                    (Bits::B8, Affine::Min, 2) => tile::<8, true, 2>(self, a),
                    (Bits::B8, Affine::Min, _) => tile::<8, true, 1>(self, a),
                    (Bits::B8, Affine::Offset(_), 4) => tile::<8, false, 4>(self, a),
                    (Bits::B8, Affine::Offset(_), 3) => tile::<8, false, 3>(self, a),
                    (Bits::B8, Affine::Offset(_), 2) => tile::<8, false, 2>(self, a),
                    (Bits::B8, Affine::Offset(_), _) => tile::<8, false, 1>(self, a),
                }
            }
            j += rows;
        }
    }
}

fn decode_q4_0(x: &[u8], b: usize, (u, d, _): BlockOut<'_>) {
    let x = &x[b * 18..(b + 1) * 18];
    *d = f16_at(x, 0);
    for j in 0..16 {
        u[j] = x[2 + j] & 0xF;
        u[j + 16] = x[2 + j] >> 4;
    }
}

fn decode_q4_1(x: &[u8], b: usize, (u, d, m): BlockOut<'_>) {
    let x = &x[b * 20..(b + 1) * 20];
    (*d, *m) = (f16_at(x, 0), f16_at(x, 2));
    for j in 0..16 {
        u[j] = x[4 + j] & 0xF;
        u[j + 16] = x[4 + j] >> 4;
    }
}

fn decode_q5_0(x: &[u8], b: usize, (u, d, _): BlockOut<'_>) {
    let x = &x[b * 22..(b + 1) * 22];
    *d = f16_at(x, 0);
    let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
    for j in 0..16 {
        u[j] = (x[6 + j] & 0xF) | ((((qh >> j) & 1) as u8) << 4);
        u[j + 16] = (x[6 + j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
}

fn decode_q5_1(x: &[u8], b: usize, (u, d, m): BlockOut<'_>) {
    let x = &x[b * 24..(b + 1) * 24];
    (*d, *m) = (f16_at(x, 0), f16_at(x, 2));
    let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
    for j in 0..16 {
        u[j] = (x[8 + j] & 0xF) | ((((qh >> j) & 1) as u8) << 4);
        u[j + 16] = (x[8 + j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
}

fn decode_q8_0(x: &[u8], b: usize, (u, d, _): BlockOut<'_>) {
    let x = &x[b * 34..(b + 1) * 34];
    *d = f16_at(x, 0);
    for j in 0..32 {
        u[j] = x[2 + j] ^ 0x80; // i8 + 128
    }
}

/// Sub-block `b % 8` of a 144-byte Q4_K super-block, as candle's `BlockQ4K::to_float`.
fn decode_q4_k(x: &[u8], b: usize, (u, d, m): BlockOut<'_>) {
    let x = &x[(b / 8) * 144..(b / 8 + 1) * 144];
    let sub = b % 8;
    let (dd, dmin) = (f16_at(x, 0), f16_at(x, 2));
    let scales = &x[4..16];
    let (sc, mn) = if sub < 4 {
        (scales[sub] & 63, scales[sub + 4] & 63)
    } else {
        (
            (scales[sub + 4] & 0xF) | ((scales[sub - 4] >> 6) << 4),
            (scales[sub + 4] >> 4) | ((scales[sub] >> 6) << 4),
        )
    };
    *d = dd * sc as f32;
    *m = -(dmin * mn as f32);
    let qs = &x[16 + (sub / 2) * 32..16 + (sub / 2) * 32 + 32];
    let shift = 4 * (sub % 2);
    for j in 0..32 {
        u[j] = (qs[j] >> shift) & 0xF;
    }
}

/// Rounds half to even, without a libm call (|x| < 2^22).
#[inline]
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (x + MAGIC) - MAGIC
}

/// `outs[i] (m × n_i) = acts · ws[i]ᵀ` for weights sharing one input (q/k/v, gate/up), in one
/// parallel pass over all their tiles (one wake-up of the thread pool instead of one per weight).
/// Panics when the CPU lacks the kernel's instructions or on shape mismatch.
pub fn matmul_many(ws: &[&PackedWeight], acts: &QuantizedActs, outs: &mut [&mut [f32]]) {
    assert!(
        PackedWeight::supported(),
        "PackedWeight::matmul needs AVX-512 VNNI"
    );
    assert_eq!(ws.len(), outs.len());
    let mut starts = Vec::with_capacity(ws.len() + 1);
    let mut total = 0;
    for (w, out) in ws.iter().zip(outs.iter()) {
        assert_eq!(acts.pairs, w.pairs, "activation width does not match");
        assert_eq!(out.len(), acts.m * w.n);
        starts.push(total);
        total += w.n.div_ceil(TILE_N);
    }
    starts.push(total);
    let ptrs: Vec<SharedPtr<f32>> = outs.iter_mut().map(|o| SharedPtr(o.as_mut_ptr())).collect();
    let run = |range: std::ops::Range<usize>| {
        let mut which = 0;
        for g in range {
            while g >= starts[which + 1] {
                which += 1;
            }
            // SAFETY: instructions checked above; a tile writes only its own columns.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                ws[which].tile_all_rows(g - starts[which], acts, ptrs[which].0)
            };
        }
    };
    if total < 2 {
        run(0..total);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(total, run);
    }
}

/// Where row `r`'s pair `p` starts in the tile-interleaved values.
fn pair_offset(pairs: usize, pair_bytes: usize, r: usize, p: usize) -> usize {
    (((r / TILE_N) * pairs + p) * TILE_N + r % TILE_N) * pair_bytes
}

/// Where row `r`'s block `b` has its scale (and minimum) in the tile-interleaved arrays.
fn scale_index(pairs: usize, r: usize, b: usize) -> usize {
    (((r / TILE_N) * pairs + b / 2) * TILE_N + r % TILE_N) * 2 + b % 2
}

/// Activation rows quantized to int8 blocks of 32, laid out in block pairs for the kernel.
pub struct QuantizedActs {
    m: usize,
    pairs: usize,
    /// Per row, per pair: 64 int8 values (zero padded).
    q: Vec<i8>,
    /// Per row, per pair: 16 lanes, the first 8 the first block's scale, the last 8 the second's.
    lanes: Vec<f32>,
    /// Per row, per block: scale × sum of the block's int8 values.
    sums: Vec<f32>,
}

impl QuantizedActs {
    /// Quantizes `m` rows of `k` values (k a multiple of 32) with one scale per block of 32.
    pub fn new(x: &[f32], m: usize, k: usize) -> Self {
        assert!(
            k.is_multiple_of(BLOCK) && x.len() == m * k,
            "bad activation shape"
        );
        let nb = k / BLOCK;
        let pairs = nb.div_ceil(2);
        let mut q = vec![0i8; m * pairs * PAIR];
        let mut lanes = vec![0f32; m * pairs * 16];
        let mut sums = vec![0f32; m * pairs * 2];
        for r in 0..m {
            for b in 0..nb {
                let src = &x[r * k + b * BLOCK..r * k + (b + 1) * BLOCK];
                let dst = &mut q[r * pairs * PAIR + b * BLOCK..r * pairs * PAIR + (b + 1) * BLOCK];
                let amax = src.iter().fold(0f32, |a, &v| a.max(v.abs()));
                let d = amax / 127.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                let mut isum = 0i32;
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = round_even(v * inv) as i8;
                    isum += *o as i32;
                }
                let (p, half) = (b / 2, b % 2);
                lanes[(r * pairs + p) * 16 + half * 8..(r * pairs + p) * 16 + half * 8 + 8].fill(d);
                sums[r * pairs * 2 + b] = d * isum as f32;
            }
        }
        QuantizedActs {
            m,
            pairs,
            q,
            lanes,
            sums,
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.m
    }
}

/// Unpacks one pair of blocks to 64 unsigned bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn unpack<const BITS: u32>(p: *const u8) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    unsafe {
        if BITS == 8 {
            return _mm512_loadu_si512(p as *const _);
        }
        let x = _mm256_loadu_si256(p as *const __m256i);
        let mask = _mm256_set1_epi8(0x0F);
        let lo = _mm256_and_si256(x, mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), mask);
        let v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        if BITS == 5 {
            let qh = std::ptr::read_unaligned(p.add(32) as *const u64);
            _mm512_mask_add_epi8(v, qh, v, _mm512_set1_epi8(0x10))
        } else {
            v
        }
    }
}

/// (tile values, bytes per pair, tile, activations, first activation row, output).
type TileArgs<'a> = (*const u8, usize, usize, &'a QuantizedActs, usize, *mut f32);

/// The 4 weight rows of tile `t` × R activation rows (from `j0`). Every activation row goes
/// through the same operations whatever R is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const BITS: u32, const MIN: bool, const R: usize>(
    w: &PackedWeight,
    (vals, pb, t, acts, j0, out): TileArgs<'_>,
) {
    use std::arch::x86_64::*;
    let n0 = t * TILE_N;
    let valid = TILE_N.min(w.n - n0);
    let pairs = w.pairs;
    let offset = match w.affine {
        Affine::Offset(o) => o,
        Affine::Min => 0.0,
    };
    unsafe {
        // Lanes 0-7 take element 2i (block 2p of row i), lanes 8-15 element 2i + 1.
        let picks: [__m512i; TILE_N] = std::array::from_fn(|i| {
            let (a, b) = (2 * i as i32, 2 * i as i32 + 1);
            _mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a)
        });
        let zero = _mm512_setzero_si512();
        let mut acc = [[_mm512_setzero_ps(); TILE_N]; R];
        // Σ_b m_b · (scale_b · Σ a_b) per activation row, lane 2i + h for row i, block 2p + h.
        let mut macc = [_mm256_setzero_ps(); R];
        let scale_base = t * pairs * TILE_N * 2;
        let aq = acts.q.as_ptr().add(j0 * pairs * PAIR);
        let al = acts.lanes.as_ptr().add(j0 * pairs * 16);
        let asum = acts.sums.as_ptr().add(j0 * pairs * 2);
        for p in 0..pairs {
            let at = vals.add(p * TILE_N * pb);
            // (Addresses past the end are never dereferenced: prefetches do not fault.)
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(PREFETCH_PAIRS * TILE_N * pb) as *const i8);
            let si = scale_base + p * TILE_N * 2;
            let (scales, mins) = if MIN {
                _mm_prefetch::<_MM_HINT_T0>(
                    w.d.as_ptr().wrapping_add(si + PREFETCH_PAIRS * 8) as *const i8
                );
                _mm_prefetch::<_MM_HINT_T0>(
                    w.m.as_ptr().wrapping_add(si + PREFETCH_PAIRS * 8) as *const i8
                );
                (
                    _mm256_loadu_ps(w.d.as_ptr().add(si)),
                    _mm256_loadu_ps(w.m.as_ptr().add(si)),
                )
            } else {
                _mm_prefetch::<_MM_HINT_T0>(
                    w.d16.as_ptr().wrapping_add(si + PREFETCH_PAIRS * 8) as *const i8
                );
                let sc = _mm256_cvtph_ps(_mm_loadu_si128(w.d16.as_ptr().add(si) as *const __m128i));
                (sc, sc)
            };
            let scales16 = _mm512_castps256_ps512(scales);
            let mut wv = [zero; TILE_N];
            let mut ws = [_mm512_setzero_ps(); TILE_N];
            for i in 0..TILE_N {
                wv[i] = unpack::<BITS>(at.add(i * pb));
                ws[i] = _mm512_permutexvar_ps(picks[i], scales16);
            }
            for j in 0..R {
                let a = _mm512_loadu_si512(aq.add((j * pairs + p) * PAIR) as *const _);
                let s = _mm512_loadu_ps(al.add((j * pairs + p) * 16));
                let sums = _mm256_castpd_ps(_mm256_broadcast_sd(
                    &*(asum.add(j * pairs * 2 + 2 * p) as *const f64),
                ));
                macc[j] = _mm256_fmadd_ps(mins, sums, macc[j]);
                for i in 0..TILE_N {
                    let dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, wv[i], a));
                    acc[j][i] = _mm512_fmadd_ps(dot, _mm512_mul_ps(ws[i], s), acc[j][i]);
                }
            }
        }
        for j in 0..R {
            let mut m8 = [0f32; 8];
            _mm256_storeu_ps(m8.as_mut_ptr(), macc[j]);
            for i in 0..valid {
                let minterm = m8[2 * i] + m8[2 * i + 1];
                let main = _mm512_reduce_add_ps(acc[j][i]);
                let v = if MIN {
                    main + minterm
                } else {
                    main - offset * minterm
                };
                *out.add((j0 + j) * w.n + n0 + i) = v;
            }
        }
    }
}

#[derive(Clone, Copy)]
struct SharedPtr<T>(*mut T);
unsafe impl<T> Send for SharedPtr<T> {}
unsafe impl<T> Sync for SharedPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn weights(n: usize, k: usize) -> Vec<f32> {
        (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0 + (i as f32 * 0.013).sin())
            .collect()
    }

    /// Packing reproduces candle's own dequantization of every GGUF type (exactly for the
    /// repacked ones, within 8-bit rounding for the re-quantized ones).
    #[test]
    fn packing_matches_candle_dequantization() {
        let (n, k) = (6, 512);
        let w = weights(n, k);
        let t = Tensor::from_slice(&w, (n, k), &Device::Cpu).unwrap();
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
            GgmlDType::F16,
            GgmlDType::F32,
        ] {
            let qt = QTensor::quantize(&t, dtype).unwrap();
            let reference = qt
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let packed = PackedWeight::from_ggml(dtype, &qt.data().unwrap(), n, k).unwrap();
            let ours = packed.dequantize();
            let exact = !matches!(dtype, GgmlDType::Q6K | GgmlDType::F16 | GgmlDType::F32);
            for (i, (&a, &b)) in ours.iter().zip(&reference).enumerate() {
                let tol = if exact { 1e-6 * b.abs() } else { 0.02 };
                assert!((a - b).abs() <= tol, "{dtype:?} [{i}]: {a} vs {b}");
            }
        }
    }

    #[test]
    fn matmul_matches_a_reference_and_is_batch_invariant() {
        if !PackedWeight::supported() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        // k = 96: three blocks, an odd count, so the padding block is exercised.
        let (n, k) = (9, 96);
        let w = weights(n, k);
        let t = Tensor::from_slice(&w, (n, k), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            let qt = QTensor::quantize(&t, dtype).unwrap();
            let packed = PackedWeight::from_ggml(dtype, &qt.data().unwrap(), n, k).unwrap();
            let deq = packed.dequantize();
            for m in [1, 3, 4, 7] {
                let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let mut out = vec![0f32; m * n];
                packed.matmul(&x, m, &mut out);
                for r in 0..m {
                    for c in 0..n {
                        let exact: f32 = (0..k).map(|i| x[r * k + i] * deq[c * k + i]).sum();
                        let norm: f32 = (0..k).map(|i| deq[c * k + i].abs()).sum();
                        // int8 activations: at most half a step (amax/254) per value.
                        let err = (out[r * n + c] - exact).abs();
                        assert!(
                            err <= norm / 254.0 + 1e-4,
                            "{dtype:?} m={m} r={r} c={c}: {} vs {exact}",
                            out[r * n + c]
                        );
                    }
                }
                // A row's result is bit-identical whatever the batch size.
                for r in 0..m {
                    let mut one = vec![0f32; n];
                    packed.matmul(&x[r * k..(r + 1) * k], 1, &mut one);
                    assert_eq!(&one[..], &out[r * n..(r + 1) * n], "{dtype:?} row {r}");
                }
            }
        }
        assert!(PackedWeight::from_f32(&w[..n * 48], n, 48).is_none());
    }
}

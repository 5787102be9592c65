//! A batched CPU matmul for many activation rows against int8 block-quantized weights.
//!
//! candle's quantized kernels stream the weights once per activation row tile and, for shapes
//! whose inner dimension is not a multiple of 256 (qwen2-0.5B's 896), fall back to AVX2 dot
//! products; dense sampling decodes 8–64 rows per step, where the work is compute-bound. This
//! kernel stores each weight as int8 with one f32 scale per 32 values (the information of Q8_0),
//! dequantizes a tile of 4 weight rows into an L1/L2-resident f32 scratch once, and multiplies it
//! with every activation row using AVX-512 FMAs in a 4×4 register tile, so the conversion cost is
//! shared by all rows and every weight byte is read from memory once per step. Work is split
//! over weight-row tiles on candle's CPU pool (the engine's thread budget).

/// Values per quantization block.
const BLOCK: usize = 32;
/// Weight rows per tile.
const TILE_N: usize = 4;
/// Activation rows per register tile.
const TILE_M: usize = 4;

/// A weight matrix (n rows × k) as int8 blocks of 32 with one f32 scale each.
pub struct Int8Weight {
    n: usize,
    k: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
}

impl Int8Weight {
    /// Whether this CPU runs the kernel (AVX-512F).
    pub fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Quantizes a row-major (n × k) f32 matrix; `None` when k is not a multiple of 32.
    pub fn from_f32(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(BLOCK) || w.len() != n * k {
            return None;
        }
        let mut q = vec![0i8; n * k];
        let mut scales = vec![0f32; n * k / BLOCK];
        for (b, (src, dst)) in w
            .chunks_exact(BLOCK)
            .zip(q.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let amax = src.iter().fold(0f32, |m, &v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (o, &v) in dst.iter_mut().zip(src) {
                *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
            }
            scales[b] = d;
        }
        Some(Int8Weight { n, k, q, scales })
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// `out (m × n) = x (m × k) · wᵀ`. Panics when the CPU lacks AVX-512F (check [`supported`]).
    ///
    /// [`supported`]: Int8Weight::supported
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert!(Self::supported(), "Int8Weight::matmul needs AVX-512F");
        assert_eq!(x.len(), m * self.k);
        assert_eq!(out.len(), m * self.n);
        let tiles = self.n.div_ceil(TILE_N);
        let out_ptr = SharedPtr(out.as_mut_ptr());
        let run = |range: std::ops::Range<usize>| {
            // Rebinding makes the closure capture the Sync wrapper, not its raw-pointer field.
            #[allow(clippy::redundant_locals)]
            let out_ptr = out_ptr;
            let mut scratch = vec![0f32; TILE_N * self.k];
            for t in range {
                // SAFETY: AVX-512F checked above; tile t writes only columns of its own rows.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    self.tile_avx512(t, x, m, &mut scratch, out_ptr.0)
                };
            }
        };
        if tiles < 2 {
            run(0..tiles);
        } else {
            candle_core::utils::barrier_pool().execute_chunked(tiles, run);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_avx512(
        &self,
        t: usize,
        x: &[f32],
        m: usize,
        scratch: &mut [f32],
        out: *mut f32,
    ) {
        use std::arch::x86_64::*;
        let k = self.k;
        let n0 = t * TILE_N;
        let valid = TILE_N.min(self.n - n0);
        let n = self.n;
        if m == 1 {
            // One row: multiply straight from int8, no scratch round trip.
            for i in 0..valid {
                let row = n0 + i;
                let q = &self.q[row * k..(row + 1) * k];
                let s = &self.scales[row * k / BLOCK..(row + 1) * k / BLOCK];
                unsafe {
                    let mut acc = _mm512_setzero_ps();
                    for (b, &scale) in s.iter().enumerate() {
                        let d = _mm512_set1_ps(scale);
                        for h in 0..2 {
                            // The same operations in the same order as the tiled path, so a
                            // row's result does not depend on the batch size.
                            let off = b * BLOCK + h * 16;
                            let bytes = _mm_loadu_si128(q.as_ptr().add(off) as *const __m128i);
                            let w =
                                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes)), d);
                            acc = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(off)), w, acc);
                        }
                    }
                    *out.add(n0 + i) = _mm512_reduce_add_ps(acc);
                }
            }
            return;
        }
        // Dequantize the tile's rows (zeros for rows past n) once for all activation rows.
        for i in 0..TILE_N {
            let dst = &mut scratch[i * k..(i + 1) * k];
            if i >= valid {
                dst.fill(0.0);
                continue;
            }
            let row = n0 + i;
            let q = &self.q[row * k..(row + 1) * k];
            let s = &self.scales[row * k / BLOCK..(row + 1) * k / BLOCK];
            for (b, &scale) in s.iter().enumerate() {
                unsafe {
                    let d = _mm512_set1_ps(scale);
                    for h in 0..2 {
                        let off = b * BLOCK + h * 16;
                        let bytes = _mm_loadu_si128(q.as_ptr().add(off) as *const __m128i);
                        let v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
                        _mm512_storeu_ps(dst.as_mut_ptr().add(off), _mm512_mul_ps(v, d));
                    }
                }
            }
        }
        let mut r = 0;
        while r < m {
            let rows = TILE_M.min(m - r);
            unsafe {
                match rows {
                    4 => micro::<4>(x, r, k, scratch, out, n, n0, valid),
                    3 => micro::<3>(x, r, k, scratch, out, n, n0, valid),
                    2 => micro::<2>(x, r, k, scratch, out, n, n0, valid),
                    _ => micro::<1>(x, r, k, scratch, out, n, n0, valid),
                }
            }
            r += rows;
        }
    }
}

/// R activation rows (from `r`) × the 4 dequantized weight rows in `w`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn micro<const R: usize>(
    x: &[f32],
    r: usize,
    k: usize,
    w: &[f32],
    out: *mut f32,
    n: usize,
    n0: usize,
    valid: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); TILE_N]; R];
    let xp = x.as_ptr();
    let wp = w.as_ptr();
    let mut kk = 0;
    while kk < k {
        unsafe {
            let wv = [
                _mm512_loadu_ps(wp.add(kk)),
                _mm512_loadu_ps(wp.add(k + kk)),
                _mm512_loadu_ps(wp.add(2 * k + kk)),
                _mm512_loadu_ps(wp.add(3 * k + kk)),
            ];
            for j in 0..R {
                let xv = _mm512_loadu_ps(xp.add((r + j) * k + kk));
                for i in 0..TILE_N {
                    acc[j][i] = _mm512_fmadd_ps(xv, wv[i], acc[j][i]);
                }
            }
        }
        kk += 16;
    }
    for j in 0..R {
        for i in 0..valid {
            unsafe { *out.add((r + j) * n + n0 + i) = _mm512_reduce_add_ps(acc[j][i]) };
        }
    }
}

#[derive(Clone, Copy)]
struct SharedPtr(*mut f32);
unsafe impl Send for SharedPtr {}
unsafe impl Sync for SharedPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_reference_matmul() {
        if !Int8Weight::supported() {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        let (n, k) = (9, 64);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let q = Int8Weight::from_f32(&w, n, k).unwrap();
        for m in [1, 3, 4, 7] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
                .collect();
            let mut out = vec![0f32; m * n];
            q.matmul(&x, m, &mut out);
            for r in 0..m {
                for c in 0..n {
                    let exact: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum();
                    let err = (out[r * n + c] - exact).abs();
                    // int8 rounding: at most half a step (amax/254) per weight.
                    assert!(
                        err < 0.05 * (1.0 + exact.abs()),
                        "m={m} r={r} c={c}: {} vs {exact}",
                        out[r * n + c]
                    );
                }
            }
        }
        // A row's result is bit-identical whatever the batch size.
        let x: Vec<f32> = (0..5 * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut batch = vec![0f32; 5 * n];
        q.matmul(&x, 5, &mut batch);
        for r in 0..5 {
            let mut one = vec![0f32; n];
            q.matmul(&x[r * k..(r + 1) * k], 1, &mut one);
            assert_eq!(&one[..], &batch[r * n..(r + 1) * n], "row {r}");
        }
        assert!(Int8Weight::from_f32(&w[..n * 48], n, 48).is_none());
    }
}

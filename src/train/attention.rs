//! Segment-causal attention with a backward pass: the attention of packed training rows.
//!
//! A training batch is many examples laid end to end as one flat sequence of `T` tokens
//! ([`Segments`] says where each example starts and ends). Token `t` attends to the tokens of its
//! own example up to itself — never to another example — so the packed examples are trained
//! exactly as if each were alone (the block-diagonal causal mask).
//!
//! On the CPU this is a [`CustomOp3`] that works one (example, KV head) block at a time: the
//! `L × L` scores of each of the block's query heads are one GEMM, masked causally and
//! soft-maxed in place, and the outputs another GEMM — no `T × T` matrix across examples and no
//! mask tensor. The backward pass recomputes the probabilities from the queries and keys instead
//! of storing them (FlashAttention's trade), so a layer keeps only its inputs and output for
//! backward, and gets `dQ`, `dK`, `dV` from five GEMMs per head. Grouped-query attention is
//! native: the query heads that share a KV head read the same K/V and accumulate into the same
//! `dK`/`dV`. Blocks run in parallel on rayon (or, when there are fewer blocks than threads,
//! one after another with a parallel GEMM); each output element is written by one block in a
//! fixed order, so results are bitwise reproducible for a given thread count.
//!
//! On other devices [`segment_attention`] builds the same mask as a tensor and uses candle's
//! differentiable ops (memory `O(T²)` per head; the GPU path), and the tests check that both
//! give the same values and gradients.
//!
//! Layouts: `q` is `(T, H, D)`, `k` and `v` are `(T, G, D)` with `H` a multiple of `G`; the
//! result is `(T, H, D)`. f32 and f64 are supported (f64 for gradient checks).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Where each token's example starts and ends in a flat batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// For each token, the index of the first token of its example.
    start: Arc<[u32]>,
    /// For each token, one past the index of the last token of its example.
    end: Arc<[u32]>,
}

impl Segments {
    /// Segments of the given lengths, laid end to end.
    pub fn from_lengths(lengths: impl IntoIterator<Item = usize>) -> Self {
        let (mut start, mut end) = (Vec::new(), Vec::new());
        let mut at = 0u32;
        for len in lengths {
            let stop = at + len as u32;
            for _ in 0..len {
                start.push(at);
                end.push(stop);
            }
            at = stop;
        }
        Segments {
            start: start.into(),
            end: end.into(),
        }
    }

    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// Each example's token range, in order.
    pub fn ranges(&self) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut t = 0;
        while t < self.start.len() {
            let end = self.end[t] as usize;
            out.push(t..end);
            t = end;
        }
        out
    }

    /// Whether tokens `a` and `b` belong to the same example.
    pub fn same(&self, a: usize, b: usize) -> bool {
        self.start[a] == self.start[b]
    }
}

/// Attention of `q` over `k`/`v` within each segment, causal, scaled by `1/√D`.
pub fn segment_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &Segments,
) -> Result<Tensor> {
    let (t, h, d) = q.dims3()?;
    let (tk, g, dk) = k.dims3()?;
    if tk != t || dk != d || v.dims3()? != (t, g, d) || g == 0 || h % g != 0 {
        candle_core::bail!(
            "segment attention: q {:?}, k {:?}, v {:?} do not fit (T, H, D) / (T, G, D)",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if segments.len() != t {
        candle_core::bail!(
            "segment attention: {} segment entries for {t} tokens",
            segments.len()
        );
    }
    let scale = 1.0 / (d as f64).sqrt();
    match q.device() {
        Device::Cpu => {
            let op = SegmentAttention {
                segments: segments.clone(),
                scale,
            };
            q.contiguous()?
                .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
        }
        _ => masked_attention(q, k, v, segments, scale),
    }
}

/// The same attention from candle's differentiable ops and an explicit mask (any device).
fn masked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &Segments,
    scale: f64,
) -> Result<Tensor> {
    let (t, h, d) = q.dims3()?;
    let g = k.dim(1)?;
    let rep = h / g;
    let repeat = |x: &Tensor| -> Result<Tensor> {
        // (T, G, D) → (G·rep, T, D) with query head i reading KV head i / rep.
        let x = x.transpose(0, 1)?.contiguous()?;
        let x = x.unsqueeze(1)?.expand((g, rep, t, d))?;
        x.reshape((h, t, d))
    };
    let q = q.transpose(0, 1)?.contiguous()?;
    let (k, v) = (repeat(k)?, repeat(v)?);
    let mut mask = vec![0f32; t * t];
    for i in 0..t {
        for j in 0..t {
            if j > i || !segments.same(i, j) {
                mask[i * t + j] = f32::NEG_INFINITY;
            }
        }
    }
    let mask = Tensor::from_vec(mask, (t, t), q.device())?.to_dtype(q.dtype())?;
    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
    let probs = candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?;
    probs.matmul(&v)?.transpose(0, 1)?.contiguous()
}

/// The CPU op: see the module documentation.
struct SegmentAttention {
    segments: Segments,
    scale: f64,
}

/// The float types the CPU kernels run in.
trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::DivAssign
    + candle_core::WithDType
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn of(x: f64) -> Self;
    fn exp(self) -> Self;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn of(x: f64) -> Self {
                x as $t
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
        }
    };
}
real!(f32);
real!(f64);

/// The sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    t: usize,
    h: usize,
    g: usize,
    d: usize,
}

/// One call's inputs.
struct Inputs<'a, R> {
    q: &'a [R],
    k: &'a [R],
    v: &'a [R],
    dims: Dims,
    seg: &'a Segments,
    scale: R,
}

/// A matrix view: base pointer, row stride and column stride (in elements).
#[derive(Clone, Copy)]
struct View<R> {
    ptr: *const R,
    rs: isize,
    cs: isize,
}

impl<R> View<R> {
    fn t(self) -> Self {
        View {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// `dst (m × n, row stride dst_rs) = [dst +] a (m × k) · b (k × n) · beta`.
///
/// SAFETY: the views and `dst` must cover the `m × k`, `k × n` and `m × n` elements their
/// strides address, and `dst` must not be written by anyone else during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<R: Real>(
    (m, n, k): (usize, usize, usize),
    dst: *mut R,
    dst_rs: usize,
    accumulate: bool,
    a: View<R>,
    b: View<R>,
    beta: R,
    parallel: gemm::Parallelism,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            R::ONE,
            beta,
            false,
            false,
            false,
            parallel,
        )
    }
}

/// A pointer that blocks share; each block writes only its own rows.
#[derive(Clone, Copy)]
struct Shared<R>(*mut R);
// SAFETY: blocks write disjoint rows (see `blocks`).
unsafe impl<R> Send for Shared<R> {}
// SAFETY: as above.
unsafe impl<R> Sync for Shared<R> {}

impl<R: Real> Inputs<'_, R> {
    /// The (example range, KV head) blocks of the call, and the GEMM parallelism each uses.
    fn blocks(&self) -> (Vec<(std::ops::Range<usize>, usize)>, gemm::Parallelism) {
        let ranges = self.seg.ranges();
        let blocks: Vec<_> = ranges
            .into_iter()
            .flat_map(|r| (0..self.dims.g).map(move |g| (r.clone(), g)))
            .collect();
        let threads = rayon::current_num_threads();
        let parallel = if blocks.len() >= threads {
            gemm::Parallelism::None
        } else {
            gemm::Parallelism::Rayon(threads)
        };
        (blocks, parallel)
    }

    fn q_view(&self, start: usize, h: usize) -> View<R> {
        let Dims { h: heads, d, .. } = self.dims;
        View {
            ptr: self.q[(start * heads + h) * d..].as_ptr(),
            rs: (heads * d) as isize,
            cs: 1,
        }
    }

    fn kv_view(&self, x: &[R], start: usize, g: usize) -> View<R> {
        let Dims { g: groups, d, .. } = self.dims;
        View {
            ptr: x[(start * groups + g) * d..].as_ptr(),
            rs: (groups * d) as isize,
            cs: 1,
        }
    }

    /// The causal probabilities `P` (`len × len`, zero above the diagonal) of query head `h`
    /// over its KV head's keys in the example starting at `start`.
    fn probabilities(
        &self,
        start: usize,
        len: usize,
        h: usize,
        p: &mut [R],
        par: gemm::Parallelism,
    ) {
        let g = h / (self.dims.h / self.dims.g);
        // SAFETY: the q/k views address `len` rows of `d` values inside the call's inputs, and
        // `p` holds `len × len` values.
        unsafe {
            matmul(
                (len, len, self.dims.d),
                p.as_mut_ptr(),
                len,
                false,
                self.q_view(start, h),
                self.kv_view(self.k, start, g).t(),
                self.scale,
                par,
            );
        }
        for (i, row) in p.chunks_mut(len).enumerate() {
            let (visible, hidden) = row.split_at_mut(i + 1);
            let mut max = R::NEG_INFINITY;
            for &s in visible.iter() {
                if s > max {
                    max = s;
                }
            }
            let mut sum = R::ZERO;
            for s in visible.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for s in visible.iter_mut() {
                *s /= sum;
            }
            hidden.fill(R::ZERO);
        }
    }
}

fn forward<R: Real>(inp: &Inputs<'_, R>) -> Vec<R> {
    let Dims { t, h, g, d } = inp.dims;
    let mut out = vec![R::ZERO; t * h * d];
    let dst = Shared(out.as_mut_ptr());
    let (blocks, par) = inp.blocks();
    let run = |(range, group): &(std::ops::Range<usize>, usize), p: &mut Vec<R>| {
        let (start, len) = (range.start, range.len());
        p.resize(len * len, R::ZERO);
        for head in group * (h / g)..(group + 1) * (h / g) {
            inp.probabilities(start, len, head, p, par);
            let o = dst;
            // SAFETY: this block alone writes rows `range` of head `head`'s output.
            unsafe {
                matmul(
                    (len, d, len),
                    o.0.add((start * h + head) * d),
                    h * d,
                    false,
                    View {
                        ptr: p.as_ptr(),
                        rs: len as isize,
                        cs: 1,
                    },
                    inp.kv_view(inp.v, start, *group),
                    R::ONE,
                    par,
                );
            }
        }
    };
    if matches!(par, gemm::Parallelism::None) {
        blocks.par_iter().for_each_init(Vec::new, |p, b| run(b, p));
    } else {
        let mut p = Vec::new();
        blocks.iter().for_each(|b| run(b, &mut p));
    }
    out
}

/// Gradients of the attention: `(dq, dk, dv)` from the inputs, the output and its gradient.
fn backward<R: Real>(inp: &Inputs<'_, R>, out: &[R], grad: &[R]) -> (Vec<R>, Vec<R>, Vec<R>) {
    let Dims { t, h, g, d } = inp.dims;
    let mut dq = vec![R::ZERO; t * h * d];
    let mut dk = vec![R::ZERO; t * g * d];
    let mut dv = vec![R::ZERO; t * g * d];
    let (dq_ptr, dk_ptr, dv_ptr) = (
        Shared(dq.as_mut_ptr()),
        Shared(dk.as_mut_ptr()),
        Shared(dv.as_mut_ptr()),
    );
    let (blocks, par) = inp.blocks();
    let run = |(range, group): &(std::ops::Range<usize>, usize), bufs: &mut (Vec<R>, Vec<R>)| {
        let (start, len) = (range.start, range.len());
        let (p, dp) = bufs;
        p.resize(len * len, R::ZERO);
        dp.resize(len * len, R::ZERO);
        let square = |m: &Vec<R>| View {
            ptr: m.as_ptr(),
            rs: len as isize,
            cs: 1,
        };
        let grad_view = View {
            ptr: grad[(start * h) * d..].as_ptr(),
            rs: (h * d) as isize,
            cs: 1,
        };
        let (dq_ptr, dk_ptr, dv_ptr) = (dq_ptr, dk_ptr, dv_ptr);
        for (n, head) in (group * (h / g)..(group + 1) * (h / g)).enumerate() {
            inp.probabilities(start, len, head, p, par);
            let d_out = View {
                ptr: grad_view.ptr.wrapping_add(head * d),
                ..grad_view
            };
            // SAFETY (all GEMMs below): views address rows `range` of the call's tensors and
            // the `len × len` buffers; this block alone writes rows `range` of head `head`'s dQ
            // and of KV head `group`'s dK and dV.
            unsafe {
                // dP = dO · Vᵀ
                matmul(
                    (len, len, d),
                    dp.as_mut_ptr(),
                    len,
                    false,
                    d_out,
                    inp.kv_view(inp.v, start, *group).t(),
                    R::ONE,
                    par,
                );
            }
            for i in 0..len {
                let row = (start + i) * h + head;
                let mut delta = R::ZERO;
                for x in 0..d {
                    delta += grad[row * d + x] * out[row * d + x];
                }
                for j in 0..=i {
                    let at = i * len + j;
                    dp[at] = p[at] * (dp[at] - delta);
                }
                dp[i * len + i + 1..(i + 1) * len].fill(R::ZERO);
            }
            unsafe {
                // dQ = scale · dS · K
                matmul(
                    (len, d, len),
                    dq_ptr.0.add((start * h + head) * d),
                    h * d,
                    false,
                    square(dp),
                    inp.kv_view(inp.k, start, *group),
                    inp.scale,
                    par,
                );
                // dK += scale · dSᵀ · Q
                matmul(
                    (len, d, len),
                    dk_ptr.0.add((start * g + group) * d),
                    g * d,
                    n > 0,
                    square(dp).t(),
                    inp.q_view(start, head),
                    inp.scale,
                    par,
                );
                // dV += Pᵀ · dO
                matmul(
                    (len, d, len),
                    dv_ptr.0.add((start * g + group) * d),
                    g * d,
                    n > 0,
                    square(p).t(),
                    d_out,
                    R::ONE,
                    par,
                );
            }
        }
    };
    if matches!(par, gemm::Parallelism::None) {
        blocks
            .par_iter()
            .for_each_init(|| (Vec::new(), Vec::new()), |bufs, b| run(b, bufs));
    } else {
        let mut bufs = (Vec::new(), Vec::new());
        blocks.iter().for_each(|b| run(b, &mut bufs));
    }
    (dq, dk, dv)
}

fn slice<'a, R: candle_core::WithDType>(s: &'a [R], l: &Layout) -> Result<&'a [R]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("segment attention: inputs must be contiguous"),
    }
}

fn values<R: Real>(t: &Tensor) -> Result<Vec<R>> {
    t.flatten_all()?.to_vec1::<R>()
}

impl SegmentAttention {
    fn dims(&self, l1: &Layout, l2: &Layout) -> Result<Dims> {
        let (t, h, d) = l1.shape().dims3()?;
        let g = l2.shape().dims()[1];
        Ok(Dims { t, h, g, d })
    }

    fn backward_as<R: Real>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (t, h, d) = q.dims3()?;
        let g = k.dim(1)?;
        let dims = Dims { t, h, g, d };
        let (q_values, k_values, v_values) = (values(q)?, values(k)?, values(v)?);
        let inputs = Inputs {
            q: &q_values,
            k: &k_values,
            v: &v_values,
            dims,
            seg: &self.segments,
            scale: R::of(self.scale),
        };
        let (dq, dk, dv) = backward(&inputs, &values(out)?, &values(grad)?);
        let dev = q.device();
        Ok((
            Tensor::from_vec(dq, (t, h, d), dev)?,
            Tensor::from_vec(dk, (t, g, d), dev)?,
            Tensor::from_vec(dv, (t, g, d), dev)?,
        ))
    }
}

impl CustomOp3 for SegmentAttention {
    fn name(&self) -> &'static str {
        "segment-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(l1, l2)?;
        let shape = l1.shape().clone();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(forward(&Inputs {
                    q: slice(q, l1)?,
                    k: slice(k, l2)?,
                    v: slice(v, l3)?,
                    dims,
                    seg: &self.segments,
                    scale: self.scale as f32,
                }))
            }
            (CpuStorage::F64(q), CpuStorage::F64(k), CpuStorage::F64(v)) => {
                CpuStorage::F64(forward(&Inputs {
                    q: slice(q, l1)?,
                    k: slice(k, l2)?,
                    v: slice(v, l3)?,
                    dims,
                    seg: &self.segments,
                    scale: self.scale,
                }))
            }
            _ => candle_core::bail!("segment attention: q, k, v must all be f32 or all f64"),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => self.backward_as::<f32>(q, k, v, res, grad_res)?,
            DType::F64 => self.backward_as::<f64>(q, k, v, res, grad_res)?,
            other => candle_core::bail!("segment attention: {other:?} is not supported"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;
    use crate::train::max_abs_diff;

    fn random(shape: (usize, usize, usize), seed: u64) -> Var {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = shape.0 * shape.1 * shape.2;
        let values: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// The CPU op and the masked reference agree on values and on every gradient, with packed
    /// segments and grouped-query heads.
    #[test]
    fn op_matches_masked_reference_values_and_gradients() {
        let segments = Segments::from_lengths([3, 1, 5]);
        let (t, h, g, d) = (9, 4, 2, 8);
        let (q, k, v) = (
            random((t, h, d), 1),
            random((t, g, d), 2),
            random((t, g, d), 3),
        );
        let weights = random((t, h, d), 4);
        let scale = 1.0 / (d as f64).sqrt();
        let ours = segment_attention(&q, &k, &v, &segments).unwrap();
        let reference = masked_attention(&q, &k, &v, &segments, scale).unwrap();
        assert!(max_abs_diff(&ours, &reference) < 1e-12);
        let loss_ours = (ours * weights.as_tensor()).unwrap().sum_all().unwrap();
        let loss_ref = (reference * weights.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap();
        let (ga, gb) = (loss_ours.backward().unwrap(), loss_ref.backward().unwrap());
        for var in [&q, &k, &v] {
            let a = ga.get(var).expect("gradient from the op");
            let b = gb.get(var).expect("gradient from the reference");
            assert!(max_abs_diff(a, b) < 1e-12);
        }
    }

    /// A token never sees another segment: changing the second example's keys and values
    /// leaves the first example's outputs bit for bit unchanged.
    #[test]
    fn segments_do_not_see_each_other() {
        let segments = Segments::from_lengths([4, 4]);
        let (q, k, v) = (
            random((8, 2, 4), 5),
            random((8, 1, 4), 6),
            random((8, 1, 4), 7),
        );
        let a = segment_attention(&q, &k, &v, &segments).unwrap();
        let k2 = Tensor::cat(
            &[
                k.narrow(0, 0, 4).unwrap(),
                random((4, 1, 4), 8).narrow(0, 0, 4).unwrap(),
            ],
            0,
        )
        .unwrap();
        let b = segment_attention(&q, &k2, &v, &segments).unwrap();
        let first = |x: &Tensor| {
            x.narrow(0, 0, 4)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        assert_eq!(first(&a), first(&b));
        let last = |x: &Tensor| {
            x.narrow(0, 4, 4)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        assert_ne!(last(&a), last(&b));
    }
}

//! Shared helpers of the CPU kernels: slices out of candle storage, runtime SIMD dispatch,
//! a vectorisable `exp`, per-thread scratch buffers and the thread count.

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};
use std::cell::RefCell;

/// Whether `t` may take the fast CPU path (f32 on the CPU).
pub(crate) fn fast_path(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

/// The contiguous f32 slice a (storage, layout) pair describes.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{op}: expected f32 storage"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: expected a contiguous input"),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (the tensor must be contiguous).
pub(crate) fn with_slice<R>(
    t: &Tensor,
    op: &'static str,
    f: impl FnOnce(&[f32]) -> R,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => Ok(f(slice(s, layout, op)?)),
        _ => candle_core::bail!("{op}: expected a cpu tensor"),
    }
}

/// A vector of `n` floats whose contents the caller overwrites entirely before reading.
#[allow(clippy::uninit_vec)]
pub(crate) fn uninit_vec(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns and every caller writes all `n` elements
    // before reading any of them.
    unsafe { v.set_len(n) };
    v
}

/// How many threads the kernels split work over: candle's pool and the calling thread.
pub(crate) fn num_threads() -> usize {
    (candle_core::utils::barrier_pool().n_workers() + 1).max(1)
}

/// Runs `f(i)` for every i in 0..n on candle's own CPU worker pool (the one its elementwise
/// ops use, with the calling thread taking part), handing out indices from a shared cursor.
/// Sharing that pool keeps a second set of spinning threads from competing for the cores.
/// `f` must not itself call `par_for`.
pub(crate) fn par_for(n: usize, f: impl Fn(usize) + Sync) {
    if n <= 1 || num_threads() == 1 {
        (0..n).for_each(f);
        return;
    }
    candle_core::utils::barrier_pool().execute_chunked(n, |r| r.for_each(&f));
}

/// Runs `f(i, chunk)` over the consecutive `chunk_len`-long pieces of `v` (the last may be
/// shorter) on the pool, as [`par_for`].
pub(crate) fn par_chunks_mut(
    v: &mut [f32],
    chunk_len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let len = v.len();
    let chunk_len = chunk_len.max(1);
    let p = SendPtr(v.as_mut_ptr());
    par_for(len.div_ceil(chunk_len), |i| {
        let a = i * chunk_len;
        let b = (a + chunk_len).min(len);
        // SAFETY: the pieces are disjoint and inside `v`, which outlives the call.
        f(i, unsafe {
            std::slice::from_raw_parts_mut(p.get().add(a), b - a)
        })
    });
}

/// Runs `f(state, i)` for every i in 0..n and returns one state per pool thread, in thread
/// order: thread t takes the t-th contiguous share of 0..n, in ascending order. The split
/// depends only on n and the thread count, so results folded from the states are the same
/// bits on every run with the same number of threads (a shared cursor would make the
/// floating-point summation order, and so the weights, differ from run to run).
pub(crate) fn par_fold<S: Send>(
    n: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize) + Sync,
) -> Vec<S> {
    if n == 0 {
        return Vec::new();
    }
    let threads = num_threads();
    if n == 1 || threads == 1 {
        let mut s = init();
        (0..n).for_each(|i| f(&mut s, i));
        return vec![s];
    }
    let share = n.div_ceil(threads);
    let slots: Vec<std::sync::Mutex<Option<S>>> =
        (0..threads).map(|_| std::sync::Mutex::new(None)).collect();
    candle_core::utils::barrier_pool().execute(|tid| {
        let range = (tid * share).min(n)..((tid + 1) * share).min(n);
        if range.is_empty() {
            return;
        }
        let mut state = init();
        range.for_each(|i| f(&mut state, i));
        if let Some(slot) = slots.get(tid) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

thread_local! {
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Calls `f` with up to three per-thread scratch buffers of the given lengths (contents
/// unspecified). The buffers live on between calls so steady-state training allocates nothing.
pub(crate) fn with_scratch<R>(
    lens: [usize; 3],
    f: impl FnOnce(&mut [f32], &mut [f32], &mut [f32]) -> R,
) -> R {
    SCRATCH.with(|cell| {
        // A nested use on the same thread (not expected) falls back to fresh buffers.
        match cell.try_borrow_mut() {
            Ok(mut bufs) => {
                for (b, &n) in bufs.iter_mut().zip(lens.iter()) {
                    if b.len() < n {
                        b.resize(n, 0.0);
                    }
                }
                let [a, b, c] = &mut *bufs;
                f(&mut a[..lens[0]], &mut b[..lens[1]], &mut c[..lens[2]])
            }
            Err(_) => {
                let (mut a, mut b, mut c) =
                    (vec![0.0; lens[0]], vec![0.0; lens[1]], vec![0.0; lens[2]]);
                f(&mut a, &mut b, &mut c)
            }
        }
    })
}

/// Defines `fn name(args) -> ret` that runs `body` compiled for AVX-512, AVX2+FMA or the
/// baseline: the instruction set [`crate::nn::cpu::isa`] chose for this CPU.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma,bmi1,bmi2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                match $crate::nn::cpu::isa() {
                    // SAFETY: isa() only returns instruction sets this CPU has.
                    $crate::nn::cpu::Isa::Avx512 => return unsafe { v4($($arg),*) },
                    // SAFETY: as above.
                    $crate::nn::cpu::Isa::Avx2 => return unsafe { v3($($arg),*) },
                    $crate::nn::cpu::Isa::Baseline => {}
                }
            }
            inner($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// exp(x) for f32 without a libm call, so loops around it vectorise: Cody–Waite range
/// reduction and a degree-6 polynomial (Cephes `expf`), relative error about 2e-7.
/// Inputs below -87.3 give 0 (well, ~1e-38), above 88.7 give +inf-ish saturation.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = (p * r) * r + r + 1.0;
    // 2^n from the integer sitting in t's low mantissa bits.
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    e * scale
}

/// The logistic sigmoid 1 / (1 + e^-x) through [`fast_exp`].
#[inline(always)]
pub(crate) fn fast_sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

/// A single-threaded sgemm: dst = alpha * dst + beta * lhs * rhs with explicit strides
/// (row stride, column stride) for each matrix. `read_dst == false` ignores alpha.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    beta: f32,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !read_dst {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: the caller's strides address an m x n matrix.
                    unsafe { *dst.offset(i as isize * dst_rs + j as isize * dst_cs) = 0.0 };
                }
            }
        }
        return;
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, 1.0,
            beta, false, false, false, par,
        )
    }
}

/// A raw pointer that may cross threads; the users split the pointee into disjoint parts.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: only used to hand disjoint regions of one buffer to different pool tasks.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    #[inline(always)]
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = fast_exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!(fast_exp(-1000.0) < 1e-37);
        assert!(fast_sigmoid(0.0) == 0.5);
    }
}

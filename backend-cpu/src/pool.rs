//! A recycling pool for the element buffers behind [`CpuStorage`](crate::CpuStorage).
//!
//! Why: every op returns fresh storage, and a training step allocates the same
//! multi-megabyte buffers (activations, gradients, temporaries) step after step. A
//! fresh large allocation comes from `mmap`, so each of its pages faults and is zeroed
//! by the kernel on first touch — for a 4 MiB output that costs about as much as the
//! op itself. Recycling the buffers dropped by the previous step avoids that.
//!
//! How: dropping a `CpuStorage` hands its `Vec` here ([`give`]); kernels ask for their
//! output with [`take`] (contents are stale but initialised values, for kernels that
//! overwrite every element) or [`take_zeroed`]. Buffers are filed by *size class*:
//! capacities are rounded up to `2^k · {1, 1.25, 1.5, 1.75}` when allocated, so a
//! buffer serves any request of its class (at most 25% slack) and similar shapes share
//! buffers. Only buffers of at least [`MIN_POOLED_BYTES`] are pooled (smaller ones are
//! cheap for the allocator), and the pool holds at most [`limit_bytes`] in total
//! (default 512 MiB, environment variable `UNIGRAD_CPU_POOL_MIB` at first use, or
//! [`set_limit_bytes`]); past the limit the buffers that have waited longest are
//! freed first. One mutex guards the pool: it is taken once per op output, never in
//! inner loops.
//!
//! Everything here is safe code: a recycled buffer only ever exposes elements that
//! were initialised before (its length is kept when it is filed and any extra
//! elements a request needs are written with `T::default()`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Buffers smaller than this many bytes are left to the allocator.
pub const MIN_POOLED_BYTES: usize = 64 * 1024;

const DEFAULT_LIMIT: usize = 512 << 20;
const CLASSES: usize = 4 * 64;

/// An element type the pool keeps buffers of.
pub trait Pooled: Copy + Default + Send + 'static {
    #[doc(hidden)]
    fn shelf(state: &mut State) -> &mut Shelf<Self>;
}

#[doc(hidden)]
pub struct Shelf<T> {
    /// Buffers by size class, each with the sequence number of its filing.
    classes: Vec<VecDeque<(u64, Vec<T>)>>,
}

impl<T> Shelf<T> {
    fn new() -> Self {
        Shelf {
            classes: (0..CLASSES).map(|_| VecDeque::new()).collect(),
        }
    }
}

#[doc(hidden)]
pub struct State {
    f32: Shelf<f32>,
    f64: Shelf<f64>,
    i64: Shelf<i64>,
    bytes: usize,
    seq: u64,
}

impl Pooled for f32 {
    fn shelf(s: &mut State) -> &mut Shelf<f32> {
        &mut s.f32
    }
}
impl Pooled for f64 {
    fn shelf(s: &mut State) -> &mut Shelf<f64> {
        &mut s.f64
    }
}
impl Pooled for i64 {
    fn shelf(s: &mut State) -> &mut Shelf<i64> {
        &mut s.i64
    }
}

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    let m = STATE.get_or_init(|| {
        if LIMIT.load(Ordering::Relaxed) == usize::MAX {
            let env = std::env::var("UNIGRAD_CPU_POOL_MIB")
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok());
            let limit = env.map_or(DEFAULT_LIMIT, |mib| mib.saturating_mul(1 << 20));
            let _ = LIMIT.compare_exchange(usize::MAX, limit, Ordering::Relaxed, Ordering::Relaxed);
        }
        Mutex::new(State {
            f32: Shelf::new(),
            f64: Shelf::new(),
            i64: Shelf::new(),
            bytes: 0,
            seq: 0,
        })
    });
    // A panic while the lock is held leaves only whole buffers behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The most bytes the pool keeps (initialised on first use, see the module docs).
pub fn limit_bytes() -> usize {
    drop(state());
    LIMIT.load(Ordering::Relaxed)
}

/// Set the most bytes the pool keeps; `0` disables pooling. Buffers over the new
/// limit are freed now.
pub fn set_limit_bytes(bytes: usize) {
    let evicted;
    {
        let mut st = state();
        LIMIT.store(bytes, Ordering::Relaxed);
        evicted = evict(&mut st, bytes);
    }
    drop(evicted);
}

/// Free every pooled buffer.
pub fn clear() {
    let evicted;
    {
        let mut st = state();
        evicted = evict(&mut st, 0);
    }
    drop(evicted);
}

/// Counters of the pool, for benchmarks and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Requests served from the pool since start.
    pub hits: u64,
    /// Requests of poolable size that needed a fresh allocation.
    pub misses: u64,
    /// Bytes held by the pool now.
    pub pooled_bytes: usize,
}

/// Current counters.
pub fn stats() -> PoolStats {
    let bytes = state().bytes;
    PoolStats {
        hits: HITS.load(Ordering::Relaxed),
        misses: MISSES.load(Ordering::Relaxed),
        pooled_bytes: bytes,
    }
}

/// Size class of the largest class size `<= c` (`c >= 4`).
fn class_floor(c: usize) -> usize {
    let k = (usize::BITS - 1 - c.leading_zeros()) as usize;
    4 * k + ((c >> (k - 2)) & 3)
}

/// Number of elements of size class `i`.
fn class_size(i: usize) -> usize {
    let (k, j) = (i / 4, i % 4);
    (1usize << k) + j * (1usize << (k - 2))
}

/// Smallest size class holding `n >= 4` elements.
fn class_ceil(n: usize) -> usize {
    let f = class_floor(n);
    if class_size(f) == n {
        f
    } else {
        f + 1
    }
}

fn poolable<T>(elems: usize) -> bool {
    elems.saturating_mul(std::mem::size_of::<T>()) >= MIN_POOLED_BYTES && std::mem::size_of::<T>() > 0
}

/// A buffer of `n` elements whose contents are arbitrary (but initialised) values:
/// for kernels that write every element.
pub fn take<T: Pooled>(n: usize) -> Vec<T> {
    take_impl(n, false)
}

/// A buffer of `n` elements all equal to `T::default()` (zero).
pub fn take_zeroed<T: Pooled>(n: usize) -> Vec<T> {
    take_impl(n, true)
}

/// Bytes from which [`can_allocate`] asks the allocator whether it can serve a
/// request at all.
const PROBE_BYTES: usize = 64 << 20;

/// Whether the system can serve an allocation of `n` elements of `T` at all: false
/// past `isize::MAX` bytes and, from 64 MiB on, when the allocator refuses the size
/// (asked with `try_reserve_exact`; the probe is released untouched, so it costs one
/// `mmap`/`munmap` pair and no page faults). Lets callers turn a request no memory
/// can hold (a broadcast view describes far more elements than it stores) into an
/// error before an infallible allocation would abort the process.
pub fn can_allocate<T: Pooled>(n: usize) -> bool {
    let Some(bytes) = n.checked_mul(std::mem::size_of::<T>()) else {
        return false;
    };
    if bytes > isize::MAX as usize {
        return false;
    }
    // the real allocation rounds up to the size class: probe that much
    bytes < PROBE_BYTES
        || Vec::<T>::new()
            .try_reserve_exact(if poolable::<T>(n) { class_size(class_ceil(n)) } else { n })
            .is_ok()
}

fn take_impl<T: Pooled>(n: usize, zero: bool) -> Vec<T> {
    if !poolable::<T>(n) || LIMIT.load(Ordering::Relaxed) == 0 {
        return vec![T::default(); n];
    }
    let class = class_ceil(n);
    let found = {
        let mut st = state();
        let got = T::shelf(&mut st).classes[class].pop_back();
        if let Some((_, v)) = &got {
            st.bytes -= v.capacity() * std::mem::size_of::<T>();
        }
        got
    };
    match found {
        Some((_, mut v)) => {
            HITS.fetch_add(1, Ordering::Relaxed);
            if zero {
                v.clear();
            } else {
                v.truncate(n);
            }
            v.resize(n, T::default());
            v
        }
        None => {
            MISSES.fetch_add(1, Ordering::Relaxed);
            // Zero-filled allocation of the whole class (the allocator hands out
            // zeroed pages without a memset); the request sees the first `n`.
            let mut v = vec![T::default(); class_size(class)];
            v.truncate(n);
            v
        }
    }
}

/// Return a buffer to the pool (dropping it when it is small or the pool is full).
pub fn give<T: Pooled>(v: Vec<T>) {
    let cap = v.capacity();
    if !poolable::<T>(cap) {
        return;
    }
    let bytes = cap * std::mem::size_of::<T>();
    let evicted;
    {
        let mut st = state();
        let limit = LIMIT.load(Ordering::Relaxed);
        if bytes > limit {
            drop(st);
            return;
        }
        st.seq += 1;
        let seq = st.seq;
        T::shelf(&mut st).classes[class_floor(cap)].push_back((seq, v));
        st.bytes += bytes;
        evicted = evict(&mut st, limit);
    }
    drop(evicted);
}

/// A buffer of any of the pooled element types, for freeing outside the lock.
#[allow(dead_code)]
enum AnyBuf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

/// The filing number and class of a shelf's longest-waiting buffer.
fn oldest<T>(shelf: &Shelf<T>) -> Option<(u64, usize)> {
    shelf
        .classes
        .iter()
        .enumerate()
        .filter_map(|(i, q)| q.front().map(|(s, _)| (*s, i)))
        .min()
}

/// Remove the longest-waiting buffers until at most `limit` bytes remain. Returns
/// them so the caller frees them after releasing the lock.
fn evict(st: &mut State, limit: usize) -> Vec<AnyBuf> {
    let mut out = Vec::new();
    while st.bytes > limit {
        // the oldest buffer is at the front of one of the classes
        let cands = [
            oldest(&st.f32).map(|(s, i)| (s, 0, i)),
            oldest(&st.f64).map(|(s, i)| (s, 1, i)),
            oldest(&st.i64).map(|(s, i)| (s, 2, i)),
        ];
        let Some((_, ty, i)) = cands.into_iter().flatten().min() else {
            st.bytes = 0;
            break;
        };
        let freed = match ty {
            0 => st.f32.classes[i].pop_front().map(|(_, v)| {
                let b = v.capacity() * 4;
                out.push(AnyBuf::F32(v));
                b
            }),
            1 => st.f64.classes[i].pop_front().map(|(_, v)| {
                let b = v.capacity() * 8;
                out.push(AnyBuf::F64(v));
                b
            }),
            _ => st.i64.classes[i].pop_front().map(|(_, v)| {
                let b = v.capacity() * 8;
                out.push(AnyBuf::I64(v));
                b
            }),
        };
        st.bytes -= freed.unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_trip() {
        for n in 4..5000usize {
            let c = class_ceil(n);
            assert!(class_size(c) >= n, "{n}");
            assert!(c <= 8 || class_size(c - 1) < n, "{n}");
            // slack at most 25 %
            assert!(class_size(c) * 4 <= n * 5 + 4 * 4, "{n}: {}", class_size(c));
            let f = class_floor(n);
            assert!(class_size(f) <= n && class_size(f + 1) > n, "{n}");
        }
        for i in 8..CLASSES - 4 {
            assert_eq!(class_floor(class_size(i)), i);
            assert_eq!(class_ceil(class_size(i)), i);
        }
    }

    // The pool is process-global and other tests run concurrently, so these tests
    // check properties that hold whatever else is filed (contents, lengths), not
    // exact hit counts.
    #[test]
    fn recycled_buffers_have_the_requested_length_and_zeroes_when_asked() {
        let n = MIN_POOLED_BYTES / 4 * 3 + 17;
        let mut v: Vec<f32> = take(n);
        assert_eq!(v.len(), n);
        v.iter_mut().for_each(|x| *x = 7.0);
        give(v);
        let z: Vec<f32> = take_zeroed(n - 5);
        assert_eq!(z.len(), n - 5);
        assert!(z.iter().all(|&x| x == 0.0));
        give(z);
        let big: Vec<f32> = take(n + 3);
        assert_eq!(big.len(), n + 3);
        give(big);
        let small: Vec<f64> = take(10);
        assert_eq!(small, vec![0.0; 10]);
    }

    #[test]
    fn a_filed_buffer_is_reused() {
        // a size no other test uses; retry because a concurrent test may take it
        let n = MIN_POOLED_BYTES / 8 * 5 + 3;
        let mut reused = false;
        for _ in 0..10 {
            let v: Vec<i64> = take(n);
            let p = v.as_ptr();
            give(v);
            let w: Vec<i64> = take(n);
            reused |= w.as_ptr() == p;
            give(w);
        }
        assert!(reused || limit_bytes() == 0);
    }
}

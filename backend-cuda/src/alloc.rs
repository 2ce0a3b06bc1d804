//! Size-bucketed free lists: the host-side bookkeeping of the caching allocator.
//!
//! `cuMemAlloc`/`cuMemFree` are slow (they can synchronize the device and take
//! tens of microseconds), while a training step allocates and drops the same set of
//! buffer sizes on every iteration. So dropped blocks are not freed but kept in a
//! free list per size bucket, and the next request for that bucket reuses one.
//! Buckets are coarse enough that slightly different sizes share blocks (at most
//! 25 % waste above 1 MiB, power-of-two buckets below), and the cache is only given
//! back to the driver when an allocation fails (then retried) or on request.
//!
//! This module is pure bookkeeping; [`crate::driver::Gpu`] makes the driver calls.

use std::collections::HashMap;

/// Smallest block handed out (also the alignment granularity of the buckets).
const MIN_BLOCK: usize = 512;
/// Up to this size buckets are powers of two.
const POW2_LIMIT: usize = 1 << 20;

/// Bucket (the number of bytes actually allocated) for a request of `bytes`.
pub(crate) fn bucket(bytes: usize) -> usize {
    let b = bytes.max(MIN_BLOCK);
    if b <= POW2_LIMIT {
        return b.next_power_of_two();
    }
    // Four buckets per power of two: 1, 1.25, 1.5, 1.75 times 2^p.
    let p = usize::BITS - 1 - b.leading_zeros();
    let step = 1usize << (p - 2);
    b.div_ceil(step) * step
}

/// Counters describing the allocator of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in blocks currently owned by live storages (bucket sizes).
    pub in_use_bytes: usize,
    /// Bytes in cached free blocks, ready for reuse.
    pub cached_bytes: usize,
    /// Largest `in_use_bytes + cached_bytes` seen.
    pub peak_reserved_bytes: usize,
    /// Calls to `cuMemAlloc` so far (cache misses).
    pub driver_allocs: u64,
    /// Calls to `cuMemFree` so far (cache trims).
    pub driver_frees: u64,
    /// Allocations served from the cache.
    pub reuses: u64,
}

/// Free lists per bucket plus counters. Not thread-safe by itself: the owner wraps
/// it in a mutex.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: HashMap<usize, Vec<u64>>,
    stats: MemoryStats,
}

impl Pool {
    /// A cached block of exactly `bucket` bytes, if any.
    pub(crate) fn take(&mut self, bucket: usize) -> Option<u64> {
        let ptr = self.free.get_mut(&bucket)?.pop()?;
        self.stats.cached_bytes -= bucket;
        self.stats.in_use_bytes += bucket;
        self.stats.reuses += 1;
        Some(ptr)
    }

    /// Record a fresh driver allocation of `bucket` bytes.
    pub(crate) fn note_driver_alloc(&mut self, bucket: usize) {
        self.stats.in_use_bytes += bucket;
        self.stats.driver_allocs += 1;
        self.note_peak();
    }

    /// Return a block to its free list.
    pub(crate) fn put(&mut self, ptr: u64, bucket: usize) {
        self.stats.in_use_bytes -= bucket;
        self.stats.cached_bytes += bucket;
        self.free.entry(bucket).or_default().push(ptr);
    }

    /// Remove every cached block, as `(address, bucket)` (the caller frees them).
    pub(crate) fn drain(&mut self) -> Vec<(u64, usize)> {
        let blocks: Vec<(u64, usize)> = self
            .free
            .drain()
            .flat_map(|(bucket, v)| v.into_iter().map(move |p| (p, bucket)))
            .collect();
        self.stats.driver_frees += blocks.len() as u64;
        self.stats.cached_bytes = 0;
        blocks
    }

    /// Current counters.
    pub(crate) fn stats(&self) -> MemoryStats {
        self.stats
    }

    fn note_peak(&mut self) {
        let reserved = self.stats.in_use_bytes + self.stats.cached_bytes;
        self.stats.peak_reserved_bytes = self.stats.peak_reserved_bytes.max(reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_request_with_bounded_waste() {
        assert_eq!(bucket(0), 512);
        assert_eq!(bucket(1), 512);
        assert_eq!(bucket(513), 1024);
        assert_eq!(bucket(1 << 20), 1 << 20);
        assert_eq!(bucket((1 << 20) + 1), (1 << 20) + (1 << 18));
        assert_eq!(bucket(3 << 20), 3 << 20);
        for bytes in [700usize, 4097, 1_000_000, 1_048_577, 5_000_000, 123_456_789, 1 << 33] {
            let b = bucket(bytes);
            assert!(b >= bytes, "{bytes} -> {b}");
            if bytes > POW2_LIMIT {
                assert!(b as f64 <= bytes as f64 * 1.25 + 1.0, "{bytes} -> {b}");
            }
            assert_eq!(bucket(b), b, "buckets are fixed points");
        }
    }

    #[test]
    fn pool_reuses_and_counts() {
        let mut p = Pool::default();
        assert_eq!(p.take(1024), None);
        p.note_driver_alloc(1024);
        p.put(0xabc, 1024);
        assert_eq!(p.stats().cached_bytes, 1024);
        assert_eq!(p.take(2048), None);
        assert_eq!(p.take(1024), Some(0xabc));
        let s = p.stats();
        assert_eq!(
            (s.in_use_bytes, s.cached_bytes, s.reuses, s.driver_allocs),
            (1024, 0, 1, 1)
        );
        p.put(0xabc, 1024);
        assert_eq!(p.drain(), vec![(0xabc, 1024)]);
        assert_eq!(p.stats().driver_frees, 1);
        assert_eq!(p.stats().peak_reserved_bytes, 1024);
    }
}

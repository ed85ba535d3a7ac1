//! RTP port allocation: each call takes an even RTP port (and the odd port above it for
//! RTCP, RFC 3550 §11) from the configured `media.rtp_ports` range before it answers the
//! INVITE, and gives it back when the call ends, however it ends.
//!
//! A [`PortLease`] returns its pair on `Drop`, so a call task that panics or is cancelled
//! still frees it. Free pairs are handed out in FIFO order, so a pair just released goes
//! to the back of the queue: late packets for an ended call do not reach the next call
//! on that port. Allocation happens once per call, not per packet, so a short mutex is
//! fine here.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

/// Why ports could not be handed out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PortError {
    /// The range holds no even port with its odd neighbour.
    #[error("RTP port range {start}-{end} holds no even/odd port pair")]
    EmptyRange { start: u16, end: u16 },
    /// Every pair is leased.
    #[error("all {0} RTP port pairs are in use")]
    Exhausted(usize),
}

#[derive(Debug)]
struct Inner {
    free: Mutex<VecDeque<u16>>,
    in_use: AtomicUsize,
    capacity: usize,
}

impl Inner {
    fn free(&self) -> MutexGuard<'_, VecDeque<u16>> {
        // A panic while holding this lock cannot leave the queue half-updated (push/pop
        // are single operations), so a poisoned lock is still sound to use.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hands out even RTP ports (with RTCP on port + 1) from a range. Cheap to clone; clones
/// share the pool.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    inner: Arc<Inner>,
}

impl PortAllocator {
    /// A pool over the even ports `p` of `range` whose `p + 1` is also in `range`.
    pub fn new(range: RangeInclusive<u16>) -> Result<Self, PortError> {
        let (start, end) = (*range.start(), *range.end());
        let first_even = start.saturating_add(start % 2);
        let free: VecDeque<u16> = (u32::from(first_even)..u32::from(end))
            .step_by(2)
            .filter_map(|p| u16::try_from(p).ok())
            .filter(|&p| p >= start && p < end)
            .collect();
        if free.is_empty() {
            return Err(PortError::EmptyRange { start, end });
        }
        let capacity = free.len();
        Ok(PortAllocator {
            inner: Arc::new(Inner {
                free: Mutex::new(free),
                in_use: AtomicUsize::new(0),
                capacity,
            }),
        })
    }

    /// Lease the pair that has been free the longest.
    pub fn allocate(&self) -> Result<PortLease, PortError> {
        let port = self
            .inner
            .free()
            .pop_front()
            .ok_or(PortError::Exhausted(self.inner.capacity))?;
        self.inner.in_use.fetch_add(1, Ordering::Relaxed);
        Ok(PortLease {
            port,
            pool: Arc::clone(&self.inner),
        })
    }

    /// Pairs currently leased.
    pub fn in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Relaxed)
    }

    /// Pairs in the range.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }
}

/// A leased RTP/RTCP port pair; dropping it returns the pair to the pool.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    pool: Arc<Inner>,
}

impl PortLease {
    /// The even RTP port.
    pub fn rtp_port(&self) -> u16 {
        self.port
    }

    /// The RTCP port (RTP + 1), used when RTCP is not multiplexed (RFC 5761).
    pub fn rtcp_port(&self) -> u16 {
        self.port + 1
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.free().push_back(self.port);
        self.pool.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_even_ports_with_rtcp_above() {
        let a = PortAllocator::new(20001..=20006).unwrap();
        assert_eq!(a.capacity(), 2); // 20002/3 and 20004/5; 20006 has no 20007
        let l = a.allocate().unwrap();
        assert_eq!((l.rtp_port(), l.rtcp_port()), (20002, 20003));
    }

    #[test]
    fn range_without_a_pair_is_refused() {
        assert_eq!(
            PortAllocator::new(20001..=20001).err(),
            Some(PortError::EmptyRange {
                start: 20001,
                end: 20001
            })
        );
        assert!(PortAllocator::new(65534..=65535).is_ok());
        assert!(PortAllocator::new(65535..=65535).is_err());
    }
}

//! RTP port allocation: each call takes an even RTP port (and the odd port above it for
//! RTCP, RFC 3550 §11) from the configured `media.rtp_ports` range before it answers the
//! INVITE, and gives it back when the call ends, however it ends.
//!
//! A [`PortLease`] returns its pair on `Drop`, so a call task that panics or is cancelled
//! still frees it.
//!
//! Pairs are drawn **at random** from the free pool (a CSPRNG, not in order): an attacker who
//! sees one call's port cannot predict the next call's, which is half of what an off-path
//! RTP-injection ("RTP Bleed") attack needs; the other half, accepting media only from the
//! caller's addresses, is [`crate::stream::RemotePeer`]. A pair just released first waits in
//! a quarantine queue (up to a quarter of the range) before it can be drawn again, so that
//! late packets for an ended call do not reach the next call on that port. Allocation happens
//! once per call, not per packet, so a short mutex is fine here.

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

/// The free pairs: a pool drawn at random, and the recently released ones waiting their
/// turn in release order.
#[derive(Debug)]
struct Pool {
    free: Vec<u16>,
    quarantine: VecDeque<u16>,
    /// Pairs kept in quarantine at most; older ones go back to `free`.
    quarantine_len: usize,
}

impl Pool {
    fn take(&mut self) -> Option<u16> {
        if self.free.is_empty() {
            // Everything else is leased: reuse the pair released the longest ago.
            return self.quarantine.pop_front();
        }
        let i = rand::random::<usize>() % self.free.len();
        Some(self.free.swap_remove(i))
    }

    fn give_back(&mut self, port: u16) {
        self.quarantine.push_back(port);
        while self.quarantine.len() > self.quarantine_len {
            if let Some(p) = self.quarantine.pop_front() {
                self.free.push(p);
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    pool: Mutex<Pool>,
    in_use: AtomicUsize,
    capacity: usize,
}

impl Inner {
    fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding this lock cannot leave the pool half-updated (push/pop
        // are single operations), so a poisoned lock is still sound to use.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
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
        let free: Vec<u16> = (u32::from(first_even)..u32::from(end))
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
                pool: Mutex::new(Pool {
                    free,
                    quarantine: VecDeque::new(),
                    quarantine_len: capacity / 4,
                }),
                in_use: AtomicUsize::new(0),
                capacity,
            }),
        })
    }

    /// Lease a free pair drawn at random (not one released in the last quarter-range of
    /// releases, unless nothing else is free).
    pub fn allocate(&self) -> Result<PortLease, PortError> {
        let port = self
            .inner
            .pool()
            .take()
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
        self.pool.pool().give_back(self.port);
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
        let m = a.allocate().unwrap();
        let mut got = [(l.rtp_port(), l.rtcp_port()), (m.rtp_port(), m.rtcp_port())];
        got.sort();
        assert_eq!(got, [(20002, 20003), (20004, 20005)]);
    }

    #[test]
    fn ports_are_drawn_at_random_not_in_order() {
        let a = PortAllocator::new(20000..=29999).unwrap();
        let ports: Vec<u16> = (0..64)
            .map(|_| a.allocate().unwrap().rtp_port()) // each lease is released at once
            .collect();
        let ascending = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
        // In order, 63 of 63 steps would be +2; drawn from 5,000 pairs, a +2 step has a
        // chance of 1 in 5,000 each.
        assert!(ascending < 4, "{ascending} consecutive steps: {ports:?}");
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "quarantine keeps released pairs out");
    }

    #[test]
    fn a_released_pair_is_not_handed_out_again_at_once() {
        let a = PortAllocator::new(20000..=20039).unwrap(); // 20 pairs, quarantine of 5
        for _ in 0..200 {
            let first = a.allocate().unwrap();
            let port = first.rtp_port();
            drop(first);
            let next: Vec<PortLease> = (0..5).map(|_| a.allocate().unwrap()).collect();
            assert!(next.iter().all(|l| l.rtp_port() != port));
        }
    }

    #[test]
    fn every_pair_can_be_leased_and_none_twice() {
        let a = PortAllocator::new(20000..=20099).unwrap();
        let mut leases = Vec::new();
        for _ in 0..3 {
            // Release some to fill the quarantine, then lease the whole range.
            leases.clear();
            while let Ok(l) = a.allocate() {
                leases.push(l);
            }
            assert_eq!(leases.len(), 50);
            let distinct: std::collections::HashSet<u16> =
                leases.iter().map(|l| l.rtp_port()).collect();
            assert_eq!(distinct.len(), 50);
            assert_eq!(a.in_use(), 50);
            assert_eq!(a.allocate().err(), Some(PortError::Exhausted(50)));
        }
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

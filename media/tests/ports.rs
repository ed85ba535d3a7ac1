//! RTP port allocator under concurrency: every lease comes back, including from a call
//! task that panics, and exhaustion recovers as soon as a call ends.

use std::collections::HashSet;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use dialin_media::ports::{PortAllocator, PortError};

#[test]
fn thousands_of_cycles_from_several_threads_leave_nothing_in_use() {
    let pool = PortAllocator::new(20000..=20199).unwrap();
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let pool = pool.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                for i in 0..5000 {
                    let lease = pool.allocate().expect("100 pairs for 8 threads");
                    assert_eq!(lease.rtp_port() % 2, 0);
                    assert!((20000..=20198).contains(&lease.rtp_port()));
                    if i % 7 == 0 {
                        let second = pool.allocate().expect("two leases per thread fit");
                        assert_ne!(second.rtp_port(), lease.rtp_port());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(pool.in_use(), 0);
    // Every pair is still allocatable exactly once.
    let all: Vec<_> = (0..pool.capacity())
        .map(|_| pool.allocate().unwrap())
        .collect();
    let distinct: HashSet<u16> = all.iter().map(|l| l.rtp_port()).collect();
    assert_eq!(distinct.len(), 100);
}

#[test]
fn leases_held_at_the_same_time_are_distinct() {
    let pool = PortAllocator::new(30000..=30999).unwrap();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    // Every thread holds its leases until all have recorded theirs: they are held at once.
    let all_recorded = Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            let seen = Arc::clone(&seen);
            let all_recorded = Arc::clone(&all_recorded);
            thread::spawn(move || {
                let leases: Vec<_> = (0..100).map(|_| pool.allocate().unwrap()).collect();
                {
                    let mut s = seen.lock().unwrap();
                    for l in &leases {
                        assert!(s.insert(l.rtp_port()), "port {} leased twice", l.rtp_port());
                    }
                }
                all_recorded.wait();
                leases.len()
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 400);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_panicking_call_task_returns_its_port() {
    let pool = PortAllocator::new(40000..=40003).unwrap();
    let p = pool.clone();
    let joined = thread::spawn(move || {
        let _lease = p.allocate().unwrap();
        assert_eq!(p.in_use(), 1);
        panic!("call task failed while holding its RTP port");
    })
    .join();
    assert!(joined.is_err());
    assert_eq!(pool.in_use(), 0);

    let caught = std::panic::catch_unwind(|| {
        let _a = pool.allocate().unwrap();
        let _b = pool.allocate().unwrap();
        panic!("second failure");
    });
    assert!(caught.is_err());
    assert_eq!(pool.in_use(), 0);
    assert_eq!(pool.capacity(), 2);
}

#[test]
fn exhaustion_is_an_error_and_recovers_when_a_call_ends() {
    let pool = PortAllocator::new(50000..=50005).unwrap();
    let a = pool.allocate().unwrap();
    let b = pool.allocate().unwrap();
    let c = pool.allocate().unwrap();
    assert_eq!(pool.in_use(), 3);
    assert_eq!(pool.allocate().err(), Some(PortError::Exhausted(3)));
    let freed = b.rtp_port();
    drop(b);
    let d = pool.allocate().unwrap();
    assert_eq!(d.rtp_port(), freed);
    drop((a, c, d));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_released_port_goes_to_the_back_of_the_queue() {
    let pool = PortAllocator::new(60000..=60009).unwrap();
    let first = pool.allocate().unwrap();
    let port = first.rtp_port();
    drop(first);
    // The other four pairs are handed out before the one just released.
    let next: Vec<_> = (0..4).map(|_| pool.allocate().unwrap()).collect();
    assert!(next.iter().all(|l| l.rtp_port() != port));
    assert_eq!(pool.allocate().unwrap().rtp_port(), port);
}

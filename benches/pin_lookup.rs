//! PIN lookup latency: `Store::resolve` over SQLite holding 10 million PINs (goal: p99
//! under 1 ms), as in call flow step 4 where a caller waits on it after pressing `#`.
//!
//! Run: `cargo bench -p dialin --bench pin_lookup`
//!
//! The database is built once (sorted multi-row inserts, 100 000 PINs per transaction)
//! and cached under the target directory as `dialin-bench/pins-<N>.db`; later runs reuse
//! it. `DIALIN_BENCH_PINS` changes N (default 10 000 000). The run prints latency
//! percentiles over individual lookups, then criterion's estimate of the median.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::Criterion;
use dialin::pins::{Pin, PinNamespace, RoomName};
use dialin::store::{Resolution, Store};
use rand::Rng;

const DEFAULT_PINS: u64 = 10_000_000;
const PINS_PER_ROOM: u64 = 100_000;
const SAMPLES: usize = 200_000;

/// The i-th PIN: strictly increasing in i (so inserts append to the B-tree) and spread
/// over the whole 10-digit space, with a pseudo-random low part.
fn nth_pin(i: u64, total: u64) -> String {
    let stride = 10_000_000_000 / total.max(1);
    let jitter = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % stride.max(1);
    format!("{:010}", i * stride + jitter)
}

fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // <target>/release/deps/pin_lookup-<hash>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
}

async fn prepare(total: u64) -> (Store, PathBuf) {
    let dir = target_dir().join("dialin-bench");
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let path = dir.join(format!("pins-{total}.db"));
    if !path.exists() {
        let building = dir.join(format!("pins-{total}.db.building"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", building.display()));
        }
        eprintln!(
            "building {} with {total} PINs (once; cached for later runs)",
            path.display()
        );
        let started = Instant::now();
        let store = Store::open(&format!("sqlite://{}", building.display()), 1)
            .await
            .expect("open");
        let ns = PinNamespace::parse("bench").expect("namespace");
        let now = Utc::now();
        let mut i = 0;
        while i < total {
            let end = (i + PINS_PER_ROOM).min(total);
            let room = RoomName::parse(&format!("room-{:05}", i / PINS_PER_ROOM)).expect("room");
            let pins: Vec<Pin> = (i..end)
                .map(|n| Pin::parse(&nth_pin(n, total)).expect("pin"))
                .collect();
            store
                .import_pins(&ns, &room, &pins, now)
                .await
                .expect("import");
            i = end;
        }
        store.close().await;
        std::fs::rename(&building, &path).expect("rename");
        eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());
    }
    let store = Store::open(&format!("sqlite://{}", path.display()), 1)
        .await
        .expect("open cached");
    (store, path)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

fn main() {
    let total = std::env::var("DIALIN_BENCH_PINS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_PINS);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (store, path) = rt.block_on(prepare(total));
    let ns = PinNamespace::parse("bench").expect("namespace");
    let mut rng = rand::thread_rng();
    let mut pick = || Pin::parse(&nth_pin(rng.gen_range(0..total), total)).expect("pin");

    // Warm the page cache and the prepared-statement cache, as a running gateway would be.
    rt.block_on(async {
        for _ in 0..10_000 {
            let pin = pick();
            let _ = store.resolve(&ns, &pin, Utc::now()).await;
        }
    });

    let mut samples = Vec::with_capacity(SAMPLES);
    let mut found = 0usize;
    rt.block_on(async {
        for _ in 0..SAMPLES {
            let pin = pick();
            let now = Utc::now();
            let t = Instant::now();
            let r = store.resolve(&ns, &pin, now).await.expect("resolve");
            samples.push(t.elapsed());
            found += usize::from(matches!(r, Resolution::Room { .. }));
        }
    });
    assert_eq!(found, SAMPLES, "every sampled PIN exists");
    samples.sort_unstable();
    println!(
        "pin_lookup: {total} PINs in {} ({:.0} MiB), {SAMPLES} resolve() calls: p50 {:?}, p90 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        path.display(),
        std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1048576.0),
        percentile(&samples, 0.50),
        percentile(&samples, 0.90),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
        samples.last().copied().unwrap_or_default(),
    );

    let mut other_rng = rand::thread_rng();
    let mut unknown = || {
        Pin::parse(&format!(
            "{:010}",
            other_rng.gen_range(0..10_000_000_000u64)
        ))
        .expect("pin")
    };
    let mut c = Criterion::default().configure_from_args();
    c.bench_function("resolve_existing_pin_among_10m", |b| {
        b.iter(|| {
            rt.block_on(store.resolve(&ns, &pick(), Utc::now()))
                .expect("resolve")
        })
    });
    c.bench_function("resolve_random_pin_mostly_unknown", |b| {
        b.iter(|| {
            rt.block_on(store.resolve(&ns, &unknown(), Utc::now()))
                .expect("resolve")
        })
    });
    c.final_summary();
    rt.block_on(store.close());
}

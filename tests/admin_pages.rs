//! `GET /v1/pins` at scale, on the real binary: 100,000 PINs are listed page by page with a
//! cursor; every page is bounded (at most 1,000 PINs, under 256 KB), every PIN comes exactly
//! once, and the gateway's peak memory grows by no more than its store caches allow (a single
//! list of 190,000 PINs used to be a 35 MB answer).

mod support;

use std::collections::HashSet;

use chrono::Utc;
use dialin::pins::{Pin, PinNamespace, RoomName};
use dialin::store::Store;
use serde_json::Value;
use support::gateway::{Gateway, GatewayOptions, TOKEN};

const COUNT: u32 = 100_000;

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_pins_are_listed_page_by_page_with_bounded_memory() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let pid = gw.pid().expect("the gateway runs");
    {
        let store = Store::open(&format!("sqlite://{}", gw.db.display()), 2)
            .await
            .expect("open the gateway's store");
        let pins: Vec<Pin> = (0..COUNT)
            .map(|n| Pin::parse(&format!("{:010}", u64::from(n) * 7919)).unwrap())
            .collect();
        let n = store
            .import_pins(
                &PinNamespace::parse("default").unwrap(),
                &RoomName::parse("town-hall").unwrap(),
                &pins,
                Utc::now(),
            )
            .await
            .expect("import");
        assert_eq!(n, u64::from(COUNT));
        store.close().await;
    }
    let client = reqwest::Client::new();
    let get = move |query: String| {
        let client = client.clone();
        let url = format!("http://{}/v1/pins?{query}", gw.admin);
        async move {
            let r = client.get(url).bearer_auth(TOKEN).send().await.expect("GET /v1/pins");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // A page larger than the bound is refused; a bad cursor too.
    assert_eq!(get("limit=100000".into()).await.0, 400);
    assert_eq!(get("cursor=zz".into()).await.0, 400);
    // The default page is 100.
    let (status, first) = get(String::new()).await;
    assert_eq!(status, 200);
    assert_eq!(first["pins"].as_array().map(Vec::len), Some(100));

    // One walk through every page: each PIN exactly once. It warms the store's caches
    // (SQLite's page cache and memory map grow with the database, not with the answer).
    let walk = |room: &'static str| {
        let get = get.clone();
        async move {
            let mut seen = HashSet::new();
            let mut cursor: Option<String> = None;
            let mut pages = 0;
            loop {
                let query = match &cursor {
                    Some(c) => format!("room={room}&limit=1000&cursor={c}"),
                    None => format!("room={room}&limit=1000"),
                };
                let (status, page) = get(query).await;
                assert_eq!(status, 200, "{page}");
                let pins = page["pins"].as_array().expect("pins");
                assert!(pins.len() <= 1000);
                // What one request holds is one page: about 200 KB at most.
                let size = serde_json::to_vec(&page).map_or(0, |b| b.len());
                assert!(size < 256 * 1024, "a page of {size} bytes");
                for p in pins {
                    assert!(seen.insert(p["pin"].as_str().unwrap().to_owned()), "listed twice: {p}");
                }
                pages += 1;
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
                assert!(pages <= 101, "the listing does not end");
            }
            (seen.len(), pages)
        }
    };
    let (listed, pages) = walk("town-hall").await;
    assert_eq!(listed, COUNT as usize);
    assert_eq!(pages, 100 + 1, "100 full pages and an empty last one");

    // Six listings at once, twice (six full lists at once used to take the gateway near
    // 1 GB: each a whole-table answer). What a listing holds is one page (checked above); the
    // peak still grows as each pool connection warms its SQLite page cache, a bound of the
    // configuration (8 connections of 16 MiB), not of the number of PINs listed.
    let before = peak_rss_kib(pid);
    for _round in 0..2 {
        let walks: Vec<_> = (0..6).map(|_| tokio::spawn(walk("town-hall"))).collect();
        for w in walks {
            assert_eq!(w.await.unwrap().0, COUNT as usize);
        }
    }
    let growth = peak_rss_kib(pid).saturating_sub(before) as f64 / 1024.0;
    eprintln!("12 listings of {COUNT} PINs, 6 at a time: gateway peak memory grew by {growth:.1} MiB");
    assert!(growth < 8.0 * 16.0 + 24.0, "peak memory grew by {growth:.1} MiB");
}

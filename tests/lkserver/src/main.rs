//! `dialin-lkserver`: the test LiveKit stand-in as its own process, for load runs.
//!
//! `dialin-lkserver --listen 127.0.0.1:7880 --api-key devkey --api-secret secret [--udp ADDR]
//! [--report-ms MS]` prints its URL, then the packet counters every 10 s (or every `MS`), each
//! line stamped with the milliseconds since the server started so that a load run can turn
//! two lines into a rate. `--web-rooms PREFIX:COUNT` puts a web user in each of the rooms
//! `PREFIX0` .. `PREFIX{COUNT-1}` before anyone joins: an in-process participant (`web`) that
//! publishes a 250 Hz tone and subscribes to everyone, as a browser in the meeting would.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use dialin_lkserver::{ServerOptions, TestServer};

fn usage() -> ! {
    eprintln!(
        "usage: dialin-lkserver --listen ADDR --api-key KEY --api-secret SECRET [--udp ADDR] [--report-ms MS] [--web-rooms PREFIX:COUNT]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut opts = ServerOptions::new("devkey", "secret");
    opts.listen = SocketAddr::from(([127, 0, 0, 1], 7880));
    let mut udp: Option<SocketAddr> = None;
    let mut report = Duration::from_secs(10);
    let mut web_rooms: Option<(String, u32)> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else { usage() };
        match flag.as_str() {
            "--listen" => opts.listen = value.parse().unwrap_or_else(|_| usage()),
            "--udp" => udp = Some(value.parse().unwrap_or_else(|_| usage())),
            "--report-ms" => match value.parse::<u64>() {
                Ok(ms) if ms > 0 => report = Duration::from_millis(ms),
                _ => usage(),
            },
            "--api-key" => opts.api_key = value,
            "--api-secret" => opts.api_secret = value,
            "--web-rooms" => match value.rsplit_once(':').map(|(p, n)| (p, n.parse::<u32>())) {
                Some((prefix, Ok(count))) => web_rooms = Some((prefix.to_owned(), count)),
                _ => usage(),
            },
            _ => usage(),
        }
    }
    // The UDP address is the advertised host candidate: it needs a concrete IP.
    opts.udp = udp.unwrap_or_else(|| {
        let ip = if opts.listen.ip().is_unspecified() {
            [127, 0, 0, 1].into()
        } else {
            opts.listen.ip()
        };
        SocketAddr::new(ip, 0)
    });
    let server = match TestServer::start_with(opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dialin-lkserver: {e}");
            std::process::exit(1);
        }
    };
    if let Some((prefix, count)) = &web_rooms {
        for r in 0..*count {
            let tone = dialin_lkserver::Signal::Tone {
                hz: 250.0,
                amplitude: 0.1,
            };
            if let Err(e) = server
                .add_synthetic_participant(&format!("{prefix}{r}"), "web", tone)
                .await
            {
                eprintln!("dialin-lkserver: web user of room {prefix}{r}: {e}");
                std::process::exit(1);
            }
        }
    }
    // Output errors (a closed pipe) must not stop the server.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "dialin-lkserver listening on {} (UDP {})",
        server.url(),
        server.udp_addr()
    );
    let _ = out.flush();
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(report);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if let Ok(counters) = server.counters().await {
                    let (pin, pout): (u64, u64) = counters.iter().fold((0, 0), |(a, b), c| (a + c.packets_in, b + c.packets_out));
                    let _ = writeln!(
                        out,
                        "t_ms={} participants={} packets_in={pin} packets_out={pout}",
                        started.elapsed().as_millis(),
                        counters.len()
                    );
                    let _ = out.flush();
                }
            }
        }
    }
}

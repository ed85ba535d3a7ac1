//! The `dialin` binary: `check-config` and `pin create/list/revoke` against a temporary
//! SQLite file and configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dialin");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A temporary directory with a config pointing at a SQLite file inside it.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = std::env::temp_dir().join(format!(
            "dialin_cli_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "[store]\nurl = \"sqlite://{}\"\n[admin]\ntoken = \"t\"\n\
             [[trunk]]\nid = \"a\"\nallowed_addresses = [\"127.0.0.0/8\"]\npin_length = 8\n\
             [[trunk]]\nid = \"b\"\nallowed_addresses = [\"::1\"]\npin_namespace = \"office\"\npin_length = 5\n",
            dir.join("pins.db").display()
        );
        std::fs::write(dir.join("dialin.toml"), config).unwrap();
        Sandbox { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("dialin.toml")
    }

    fn run(&self, args: &[&str]) -> Output {
        let config = self.config();
        let mut full = vec!["--config", config.to_str().unwrap()];
        full.extend_from_slice(args);
        dialin(&full)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dialin(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("DIALIN_CONFIG")
        .env_remove("DIALIN_ADMIN_TOKEN")
        .env_remove("DIALIN_LIVEKIT_API_SECRET")
        .env_remove("RUST_LOG")
        .output()
        .expect("run dialin")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

#[test]
fn check_config_accepts_the_shipped_file_and_prints_a_summary() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/dialin.toml");
    let out = ok(dialin(&[
        "check-config",
        "--config",
        shipped.to_str().unwrap(),
    ]));
    assert!(out.starts_with("OK: "), "{out}");
    assert!(out.contains("trunk default"), "{out}");
}

#[test]
fn check_config_warns_about_a_listen_set_serving_one_address_family() {
    // The shipped file listens on IPv4 loopback only: IPv6 offers would get 488.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/dialin.toml");
    let out = ok(dialin(&["check-config", "--config", shipped.to_str().unwrap()]));
    assert!(
        out.contains("warning: sip.listen: no IPv6 address"),
        "{out}"
    );
    assert!(!out.contains("no IPv4 address"), "{out}");
}

#[test]
fn check_config_names_the_bad_key_and_exits_1() {
    let sandbox = Sandbox::new();
    let text = std::fs::read_to_string(sandbox.config())
        .unwrap()
        .replace("pin_length = 8", "pin_length = 30");
    std::fs::write(sandbox.config(), text).unwrap();
    let out = sandbox.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("trunk[0].pin_length"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_path_defaults_to_the_dialin_config_variable() {
    let sandbox = Sandbox::new();
    let out = Command::new(BIN)
        .args(["check-config"])
        .env("DIALIN_CONFIG", sandbox.config())
        .env_remove("DIALIN_ADMIN_TOKEN")
        .output()
        .unwrap();
    let text = ok(out);
    assert!(
        text.contains(&sandbox.config().display().to_string()),
        "{text}"
    );
}

#[test]
fn pin_create_prints_just_a_pin_of_the_namespace_length() {
    let sandbox = Sandbox::new();
    let out = ok(sandbox.run(&["pin", "create", "--room", "standup"]));
    let pin = out.trim_end();
    assert_eq!(pin.len(), 8, "{out:?}");
    assert!(pin.chars().all(|c| c.is_ascii_digit()));
    let out = ok(sandbox.run(&["pin", "create", "--room", "board", "--namespace", "office"]));
    assert_eq!(out.trim_end().len(), 5);
}

#[test]
fn pin_create_json_prints_the_record() {
    let sandbox = Sandbox::new();
    let out = ok(sandbox.run(&[
        "pin",
        "create",
        "--room",
        "standup",
        "--pin",
        "00112233",
        "--valid-from",
        "2030-01-15T09:00:00Z",
        "--valid-until",
        "2030-01-15T11:00:00+01:00",
        "--participant-name",
        "Front desk",
        "--json",
    ]));
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["pin"], "00112233");
    assert_eq!(record["room"], "standup");
    assert_eq!(record["namespace"], "default");
    assert_eq!(record["participant_name"], "Front desk");
    assert_eq!(record["valid_until"], "2030-01-15T10:00:00Z");
}

#[test]
fn pin_create_refuses_a_taken_pin_and_bad_input() {
    let sandbox = Sandbox::new();
    ok(sandbox.run(&["pin", "create", "--room", "a", "--pin", "12345678"]));
    let taken = sandbox.run(&["pin", "create", "--room", "b", "--pin", "12345678"]);
    assert_eq!(taken.status.code(), Some(1));
    assert!(
        stderr(&taken).contains("already taken"),
        "{}",
        stderr(&taken)
    );

    let wrong_length = sandbox.run(&["pin", "create", "--room", "b", "--pin", "1234"]);
    assert_eq!(wrong_length.status.code(), Some(1));
    assert!(
        stderr(&wrong_length).contains("8-digit"),
        "{}",
        stderr(&wrong_length)
    );

    let bad_digits = sandbox.run(&["pin", "create", "--room", "b", "--pin", "1234abcd"]);
    assert_eq!(bad_digits.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&bad_digits).contains("digits"),
        "{}",
        stderr(&bad_digits)
    );

    let bad_time = sandbox.run(&["pin", "create", "--room", "b", "--valid-from", "tomorrow"]);
    assert_eq!(bad_time.status.code(), Some(2));
    assert!(
        stderr(&bad_time).contains("RFC 3339"),
        "{}",
        stderr(&bad_time)
    );
}

#[test]
fn pin_list_filters_and_revoke_removes() {
    let sandbox = Sandbox::new();
    ok(sandbox.run(&["pin", "create", "--room", "x", "--pin", "11111111"]));
    ok(sandbox.run(&["pin", "create", "--room", "y", "--pin", "22222222"]));
    ok(sandbox.run(&[
        "pin",
        "create",
        "--room",
        "x",
        "--namespace",
        "office",
        "--pin",
        "33333",
    ]));

    let table = ok(sandbox.run(&["pin", "list"]));
    assert_eq!(table.lines().count(), 4, "header and three PINs:\n{table}");
    assert!(table.contains("22222222"));

    let json = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["pin", "list", "--json"];
        full.extend_from_slice(args);
        let v: Value = serde_json::from_str(&ok(sandbox.run(&full))).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["pin"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(json(&["--room", "x"]), ["11111111", "33333"]);
    assert_eq!(json(&["--namespace", "office"]), ["33333"]);

    ok(sandbox.run(&["pin", "revoke", "--namespace", "default", "11111111"]));
    assert_eq!(json(&["--room", "x"]), ["33333"]);
    assert_eq!(json(&["--room", "x", "--all"]), ["11111111", "33333"]);
    let again = sandbox.run(&["pin", "revoke", "--namespace", "default", "11111111"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        !stderr(&again).contains("11111111"),
        "the PIN is masked in messages: {}",
        stderr(&again)
    );
}

#[test]
fn pin_create_with_a_role_shows_it_in_pin_list() {
    let sandbox = Sandbox::new();
    ok(sandbox.run(&[
        "pin", "create", "--room", "board", "--pin", "11111111", "--role", "host",
    ]));
    ok(sandbox.run(&[
        "pin",
        "create",
        "--room",
        "board",
        "--pin",
        "22222222",
        "--wait-for-host",
    ]));
    ok(sandbox.run(&["pin", "create", "--room", "board", "--pin", "33333333"]));

    let table = ok(sandbox.run(&["pin", "list"]));
    let columns = |line: &str| line.split('\t').map(str::to_owned).collect::<Vec<_>>();
    let mut lines = table.lines().map(columns);
    let header = lines.next().unwrap();
    let at = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name}: {table}"))
    };
    let (pin, role, wait) = (at("PIN"), at("ROLE"), at("WAIT_FOR_HOST"));
    let rows: Vec<[String; 3]> = lines
        .map(|l| [l[pin].clone(), l[role].clone(), l[wait].clone()])
        .collect();
    assert_eq!(
        rows,
        [
            ["11111111", "host", "no"],
            ["22222222", "participant", "yes"],
            ["33333333", "participant", "no"],
        ],
        "{table}"
    );

    let v: Value = serde_json::from_str(&ok(sandbox.run(&["pin", "list", "--json"]))).unwrap();
    assert_eq!(v[0]["role"], "host");
    assert_eq!(v[1]["wait_for_host"], true);

    let unknown = sandbox.run(&["pin", "create", "--room", "b", "--role", "owner"]);
    assert_eq!(unknown.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&unknown).contains("`participant` or `host`"),
        "{}",
        stderr(&unknown)
    );
    let host_waits = sandbox.run(&[
        "pin",
        "create",
        "--room",
        "b",
        "--role",
        "host",
        "--wait-for-host",
    ]);
    assert_eq!(host_waits.status.code(), Some(1));
    assert!(
        stderr(&host_waits).contains("wait_for_host applies to participant PINs"),
        "{}",
        stderr(&host_waits)
    );
}

/// One HTTP/1.1 GET over a plain socket; returns the status code and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn serve_runs_the_admin_api_reloads_on_sighup_and_stops_on_sigterm() {
    let sandbox = Sandbox::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sip_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(sandbox.config()).unwrap().replace(
        "[admin]\n",
        &format!(
            "[sip]\nlisten = [\"udp://127.0.0.1:{sip_port}\"]\n[media]\nrtp_ports = \"31000-31099\"\n\
             [admin]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    std::fs::write(sandbox.config(), text).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", sandbox.config().to_str().unwrap()])
        .env_remove("DIALIN_ADMIN_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let health = loop {
        if let Some(answer) = http_get(port, "/healthz") {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "admin API never came up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(health.0, 200);
    // Ready once the SIP transport is bound and the store answers.
    let ready = loop {
        let answer = http_get(port, "/readyz").unwrap();
        if answer.0 == 200 || std::time::Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(ready.0, 200, "/readyz: {}", ready.1);

    signal(child.id(), "-HUP");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the gateway"
    );
    assert_eq!(http_get(port, "/healthz").map(|a| a.0), Some(200));

    signal(child.id(), "-TERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gateway did not stop on SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

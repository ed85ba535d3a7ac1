//! A headless Chromium driven over the W3C WebDriver protocol: the browser side of the
//! web console's end-to-end tests.
//!
//! [`Browser::start`] runs `chromedriver` on a free loopback port in a process group of its
//! own, opens a session with headless Chromium (`/usr/bin/chromium`), and speaks WebDriver's
//! JSON over HTTP with `reqwest` (W3C WebDriver 2: new session, navigate, find elements by
//! CSS, element click / send keys / text, execute script, screenshot, window rect). No
//! Selenium, no npm. Conditions are awaited by polling a script ([`Browser::wait_until`]),
//! never by sleeping. On drop the session is deleted and the whole process group
//! (chromedriver and the Chromium it started) is killed, so a failing test leaves no
//! browser behind.
//!
//! [`find_browser`] says whether both programs are installed (Debian: `chromium` and
//! `chromium-driver`); a test that gets `Err` applies the project's skip rule
//! (`support::sipp::skip_or_fail`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key W3C WebDriver uses for an element reference in JSON (WebDriver 2 §12.1).
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long chromedriver may take to listen, and Chromium to open a session (a cold start
/// on a loaded two-core machine takes several seconds).
const START_LIMIT: Duration = Duration::from_secs(60);
/// Between two tries of a condition.
const POLL: Duration = Duration::from_millis(100);

/// WebDriver's special keys (WebDriver 2 §17.4.2), for [`Browser::send_keys`].
pub mod keys {
    pub const ENTER: &str = "\u{E007}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const TAB: &str = "\u{E004}";
}

/// The programs a browser test needs: chromedriver, and the Chromium it drives.
#[derive(Debug, Clone)]
pub struct BrowserTools {
    pub chromedriver: PathBuf,
    pub chromium: PathBuf,
}

/// Finds `chromedriver` and `chromium` on `PATH` or in `/usr/bin`; `Err` says what is missing.
pub fn find_browser() -> Result<BrowserTools, String> {
    let chromedriver = find_program("chromedriver")
        .ok_or("chromedriver was not found (Debian: apt-get install chromium-driver)")?;
    let chromium = find_program("chromium")
        .ok_or("chromium was not found (Debian: apt-get install chromium)")?;
    Ok(BrowserTools {
        chromedriver,
        chromium,
    })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An element found on the page (its WebDriver reference).
#[derive(Debug, Clone)]
pub struct Element(String);

/// One Chromium session behind one chromedriver.
pub struct Browser {
    driver: Child,
    /// chromedriver's and Chromium's `TMPDIR` (profile, crash reports), removed on drop.
    scratch: PathBuf,
    port: u16,
    session: String,
    client: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`×`height` window.
    pub async fn start(tools: &BrowserTools, width: u32, height: u32) -> Browser {
        let port = free_tcp_port();
        let scratch =
            std::env::temp_dir().join(format!("dialin-browser-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&scratch).expect("browser scratch directory");
        let driver = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .env("TMPDIR", &scratch)
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: Chromium and its helpers join it, and drop kills them all.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let mut browser = Browser {
            driver,
            scratch,
            port,
            session: String::new(),
            client,
        };
        browser.wait_for_driver().await;
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": tools.chromium,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--lang=en-US",
                            format!("--window-size={width},{height}"),
                        ],
                    }
                }
            }
        });
        let v = browser
            .try_command(reqwest::Method::POST, "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("chromedriver did not open a session: {e}"));
        browser.session = v["sessionId"]
            .as_str()
            .expect("a session id in the new session's answer")
            .to_owned();
        browser
    }

    async fn wait_for_driver(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        let url = format!("http://127.0.0.1:{}/status", self.port);
        loop {
            if let Ok(r) = self.client.get(&url).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return;
                    }
                }
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited with {status} before listening");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready after {START_LIMIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// One WebDriver command; `Err` carries WebDriver's error code and message.
    async fn try_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut req = self.client.request(method.clone(), &url);
        // WebDriver wants a JSON body on every POST, `{}` when there is nothing to say.
        if method == reqwest::Method::POST {
            req = req.json(&body.unwrap_or_else(|| json!({})));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| format!("{method} {path}: unreadable answer: {e}"))?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{method} {path}: {} ({})",
                v["value"]["error"].as_str().unwrap_or("?"),
                v["value"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            ))
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.try_command(method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// Loads `url` and waits for the document to be loaded.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The first element matching the CSS selector `css`, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let path = format!("/session/{}/element", self.session);
        let v = self
            .try_command(
                reqwest::Method::POST,
                &path,
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .ok()?;
        v[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))
    }

    /// The first element matching `css`, waited for up to `limit`.
    pub async fn find(&self, css: &str, limit: Duration) -> Element {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element matches {css:?} after {limit:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Finds the first element matching `css` (waited for up to `limit`) and clicks it. An
    /// element the page re-rendered between the two (a list that refreshes itself) is found
    /// again and clicked, until `limit`.
    pub async fn click_css(&self, css: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let el = self.find(css, limit).await;
            let path = format!("/session/{}/element/{}/click", self.session, el.0);
            match self.try_command(reqwest::Method::POST, &path, None).await {
                Ok(_) => return,
                Err(e) if e.contains("stale element") && Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => panic!("WebDriver: {e}"),
            }
        }
    }

    /// Clicks `el` (scrolled into view first, as a user would).
    pub async fn click(&self, el: &Element) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", el.0),
            None,
        )
        .await;
    }

    /// Types `text` into `el` (focusing it first); see [`keys`] for Enter, Escape, Tab.
    pub async fn send_keys(&self, el: &Element, text: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/value", el.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Presses and releases `key` wherever the focus is (WebDriver 2 §15, key actions).
    pub async fn press_key(&self, key: &str) {
        let actions = json!({ "actions": [{
            "type": "key",
            "id": "keyboard",
            "actions": [{ "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }],
        }]});
        self.command(reqwest::Method::POST, "/actions", Some(actions))
            .await;
    }

    /// Empties an input.
    pub async fn clear(&self, el: &Element) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/clear", el.0),
            None,
        )
        .await;
    }

    /// The rendered text of `el` (empty when it is not displayed).
    pub async fn text(&self, el: &Element) -> String {
        self.command(reqwest::Method::GET, &format!("/element/{}/text", el.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` as the body of a function in the page (`arguments` holds `args`);
    /// returns what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Polls `script` until it returns something truthy (not null, false, 0 or ""); returns
    /// that. Panics after `limit` naming `what` and the last value seen.
    pub async fn wait_until(&self, what: &str, limit: Duration, script: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.execute(script, Vec::new()).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let page = self
                    .execute("return document.body ? document.body.innerText : ''", Vec::new())
                    .await;
                panic!(
                    "waited {limit:?} for {what}; the script last returned {v}; the page shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Resizes the window (a phone's width, say).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Saves a PNG of the viewport to `path` (creating its directory).
    pub async fn screenshot(&self, path: &Path) {
        let v = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = decode_base64(v.as_str().unwrap_or_default())
            .expect("the screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Deletes the session without waiting on the async runtime (for drop): a plain
    /// HTTP/1.1 request over a blocking socket.
    fn delete_session_blocking(&self) {
        if self.session.is_empty() {
            return;
        }
        let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        let req = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session, self.port
        );
        if s.write_all(req.as_bytes()).is_ok() {
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.delete_session_blocking();
        // The process group this test started: chromedriver, and any Chromium left over.
        if let Ok(pgid) = libc::pid_t::try_from(self.driver.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group and touches no
            // memory of ours.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free TCP port")
}

/// Standard base64 (RFC 4648 §4), padding optional, as WebDriver's screenshots come.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_decodes_rfc4648_test_vectors() {
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(decode_base64(enc).as_deref(), Some(dec.as_bytes()));
        }
        assert_eq!(decode_base64("Zm9v!"), None);
    }
}

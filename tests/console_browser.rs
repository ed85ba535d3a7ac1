//! The web console (`/ui/`) end to end in a real browser: headless Chromium driven over
//! W3C WebDriver (`support/webdriver.rs`) against the real `dialin serve` binary, with a
//! real call from the in-tree SIP caller.
//!
//! A room owner signs in with the admin token, creates a PIN and copies its dial-in text,
//! finds it by room, watches a caller who keyed that PIN arrive on the live calls page,
//! hangs the call up from the page (the caller gets a BYE), revokes the PIN behind a
//! confirmation dialog, reads the health page, and switches to French. A wrong token is
//! refused on the sign-in form, and a token that stops working mid-session sends the page
//! back there. Throughout, the page must trip no Content-Security-Policy violation (the
//! console records them on `window.__cspViolations`).
//!
//! Screenshots of each page are saved as test artifacts in
//! `target/console-screenshots/<name>.png` (the Cargo target directory in use: the parent
//! of `CARGO_TARGET_TMPDIR`).
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium`, `chromium-driver`); without
//! them the tests skip with a reason, unless `DIALIN_STRICT_TESTS=1`, where they fail.

mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use support::caller::{Caller, Codec, DialOptions, DtmfMode};
use support::gateway::{Gateway, GatewayOptions, TOKEN};
use support::sipp::skip_or_fail;
use webdriver::{find_browser, keys, Browser, BrowserTools};

/// The number callers dial, as configured on the trunk and shown in the dial-in text.
const NUMBER: &str = "+33123456789";
/// The caller's number and how the console must show it (masked, DESIGN.md §Privacy).
const CALLER: &str = "+33612345678";
const CALLER_MASKED: &str = "••••5678";
/// The policy every console file must carry.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// Generous limits: a browser on a busy two-core CI machine is slow to start and to draw.
const PAGE: Duration = Duration::from_secs(20);
const SECOND: Duration = Duration::from_secs(1);

fn trunk_with_number() -> String {
    format!(
        r#"
[[trunk]]
id = "default"
allowed_addresses = ["127.0.0.0/8"]
numbers = ["{NUMBER}"]
pin_namespace = "default"
pin_length = 10
max_attempts = 3
max_calls = 10
"#
    )
}

/// Where the screenshots go: `<target dir>/console-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.parent().map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
    });
    target.join("console-screenshots")
}

async fn screenshot(browser: &Browser, name: &str) {
    browser
        .screenshot(&screenshot_dir().join(format!("{name}.png")))
        .await;
}

fn tools_or_skip() -> Option<BrowserTools> {
    match find_browser() {
        Ok(t) => Some(t),
        Err(reason) => {
            skip_or_fail(&reason);
            None
        }
    }
}

/// Signs in on the form with `token` (the page must be showing it).
async fn sign_in(browser: &Browser, token: &str) {
    let field = browser.find("#token", PAGE).await;
    browser
        .wait_until(
            "the sign-in form",
            PAGE,
            "return !document.getElementById('view-signin').hidden",
        )
        .await;
    browser.clear(&field).await;
    browser.send_keys(&field, token).await;
    browser
        .click(&browser.find("#signin-form button[type=submit]", PAGE).await)
        .await;
}

/// The CSP violations the page recorded since it loaded.
async fn csp_violations(browser: &Browser) -> serde_json::Value {
    browser
        .execute("return window.__cspViolations || null", Vec::new())
        .await
}

fn assert_no_csp_violations(v: &serde_json::Value, page: &str) {
    assert!(
        v.as_array().is_some(),
        "the console did not record CSP violations on {page} (console.js not running?)"
    );
    assert_eq!(v, &json!([]), "CSP violations on {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_creates_a_pin_shows_and_hangs_up_its_call_revokes_it_and_speaks_french() {
    let Some(tools) = tools_or_skip() else { return };
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunk_with_number()),
        ..GatewayOptions::default()
    })
    .await;
    let base = format!("http://{}/ui/", gw.admin);
    let browser = Browser::start(&tools, 1280, 900).await;
    browser.goto(&base).await;

    // Sign in.
    sign_in(&browser, TOKEN).await;
    browser
        .wait_until(
            "the PINs page after signing in",
            PAGE,
            "return location.hash === '#/pins' && !document.getElementById('view-pins').hidden",
        )
        .await;
    let stored = browser
        .execute(
            "return [sessionStorage.getItem('dialin.console.token'), localStorage.length, document.cookie]",
            Vec::new(),
        )
        .await;
    assert_eq!(
        stored,
        json!([TOKEN, 0, ""]),
        "the token is kept in sessionStorage only"
    );

    // Create a PIN for a room, with a participant name and a validity window.
    browser
        .send_keys(&browser.find("#create-room", PAGE).await, "standup")
        .await;
    browser
        .send_keys(&browser.find("#create-name", PAGE).await, "Phone guest")
        .await;
    // `datetime-local` fields take their value as the user would see it typed; setting the
    // value (local wall time) and reading the request is what matters here.
    browser
        .execute(
            "document.getElementById('create-until').value = '2099-12-31T18:30'; return true",
            Vec::new(),
        )
        .await;
    browser
        .click(&browser.find("#create-submit", PAGE).await)
        .await;
    let pin = browser
        .wait_until(
            "the new PIN",
            PAGE,
            "const s = document.getElementById('created');
             return s.hidden ? null : document.getElementById('created-pin').textContent",
        )
        .await;
    let grouped = pin.as_str().unwrap_or_default().to_owned();
    let pin: String = grouped.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(pin.len(), 10, "a 10-digit PIN, shown as {grouped:?}");
    assert_eq!(
        grouped,
        format!("{} {} {}", &pin[..3], &pin[3..6], &pin[6..]),
        "ten digits are grouped 3-3-4"
    );
    let groups = browser
        .execute(
            "return import('/ui/console.js').then(m =>
               ['1234', '12345678', '123456789', '12345678901'].map(m.groupPin))",
            Vec::new(),
        )
        .await;
    assert_eq!(
        groups,
        json!(["123 4", "123 456 78", "123 456 789", "123 456 789 01"]),
        "other lengths: groups of three, the remainder last"
    );
    let expected_text = format!("Dial {NUMBER}, then {grouped} #");
    let shown = browser
        .text(&browser.find("#dialin-text", PAGE).await)
        .await;
    assert_eq!(shown, expected_text);

    // The store holds what the form said, the validity in UTC.
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/v1/pins?room=standup", gw.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /v1/pins")
        .json()
        .await
        .expect("JSON");
    let record = listed["pins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["pin"] == pin.as_str()))
        .unwrap_or_else(|| panic!("the PIN is in the store: {listed}"))
        .clone();
    assert_eq!(record["participant_name"], "Phone guest");
    assert_eq!(record["role"], "participant");
    let until = record["valid_until"].as_str().unwrap_or_default();
    assert!(
        until.starts_with("2099-12-31") || until.starts_with("2100-01-01"),
        "valid_until in UTC from the local time typed: {until}"
    );

    // "Copy dial-in text": the clipboard gets the text; when the browser refuses, the text
    // is offered in a field instead.
    browser
        .execute(
            "window.__copied = null;
             Object.defineProperty(navigator, 'clipboard', { configurable: true,
               value: { writeText: async (t) => { window.__copied = t; } } });
             return true",
            Vec::new(),
        )
        .await;
    browser
        .click(&browser.find("#copy-dialin", PAGE).await)
        .await;
    let copied = browser
        .wait_until("the clipboard write", PAGE, "return window.__copied")
        .await;
    assert_eq!(copied, json!(expected_text));
    browser
        .execute(
            "Object.defineProperty(navigator, 'clipboard', { configurable: true,
               value: { writeText: () => Promise.reject(new DOMException('denied', 'NotAllowedError')) } });
             return true",
            Vec::new(),
        )
        .await;
    browser
        .click(&browser.find("#copy-dialin", PAGE).await)
        .await;
    let fallback = browser
        .wait_until(
            "the fallback text field",
            PAGE,
            "const f = document.getElementById('copy-fallback');
             return f.hidden ? null : document.getElementById('copy-fallback-text').value",
        )
        .await;
    assert_eq!(fallback, json!(expected_text));

    // Listed, and found by the room search (and not found under another room).
    let row = format!("#pins-body tr[data-pin='{pin}']");
    browser.find(&row, PAGE).await;
    screenshot(&browser, "pins").await;
    gw.create_pin("other-room", None).await;
    let search = browser.find("#search-room", PAGE).await;
    browser.send_keys(&search, "nothing-here").await;
    browser.send_keys(&search, keys::ENTER).await;
    browser
        .wait_until(
            "an empty search result",
            PAGE,
            "return document.querySelector('#pins-body tr.empty') !== null",
        )
        .await;
    browser.clear(&search).await;
    browser.send_keys(&search, "standup").await;
    browser
        .click(&browser.find("#search-form button[type=submit]", PAGE).await)
        .await;
    let rooms = browser
        .wait_until(
            "the search for room standup",
            PAGE,
            &format!(
                "const rows = [...document.querySelectorAll('#pins-body tr[data-pin]')];
                 return rows.some(r => r.dataset.pin === '{pin}') ? rows.map(r => r.dataset.room) : null"
            ),
        )
        .await;
    assert_eq!(rooms, json!(["standup"]), "only the room searched for");
    let row_text = browser.text(&browser.find(&row, PAGE).await).await;
    assert!(
        row_text.contains("Phone guest") && row_text.contains(&grouped),
        "the row shows the name and the grouped PIN: {row_text:?}"
    );

    // The live calls page is open (and empty) when a caller dials the number and keys the
    // PIN; the call shows within a few seconds: masked number, in the room.
    browser
        .click(&browser.find("#nav a[data-route=calls]", PAGE).await)
        .await;
    browser
        .wait_until(
            "the empty live calls page",
            PAGE,
            "return document.querySelector('#calls-body tr.empty') !== null",
        )
        .await;
    let call = Caller::dial(DialOptions {
        codecs: vec![Codec::Pcmu],
        from_user: CALLER.to_owned(),
        to_user: NUMBER.to_owned(),
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect("the gateway answers");
    call.play_silence();
    let t0 = Instant::now();
    call.wait_for_sound(t0, -40.0, 5 * SECOND)
        .await
        .expect("the welcome prompt plays");
    call.send_dtmf(&format!("{pin}#"), DtmfMode::Rfc4733)
        .await
        .expect("digits sent");

    let live = browser
        .wait_until(
            "the call in the room on the live calls page",
            PAGE,
            "const r = document.querySelector('#calls-body tr[data-call-id]');
             if (!r) return null;
             const s = r.querySelector('td.state');
             return s.dataset.state === 'in_room'
               ? [r.querySelector('td.caller').textContent, r.querySelector('td.room').textContent, s.textContent]
               : null",
        )
        .await;
    assert_eq!(live, json!([CALLER_MASKED, "standup", "In room"]));
    let body_text = browser
        .execute("return document.body.innerText", Vec::new())
        .await;
    assert!(
        !body_text.as_str().unwrap_or_default().contains("612345678"),
        "the full calling number never reaches the page"
    );
    // The duration ticks between two polls.
    let first = browser
        .execute(
            "return document.querySelector('#calls-body td.duration').textContent",
            Vec::new(),
        )
        .await;
    browser
        .wait_until(
            "the duration to tick",
            PAGE,
            &format!(
                "return document.querySelector('#calls-body td.duration').textContent !== {first}"
            ),
        )
        .await;
    browser
        .wait_until(
            "the call announced in the live region",
            PAGE,
            &format!(
                "return document.getElementById('announcer').getAttribute('aria-live') === 'polite'
                   && document.getElementById('announcer').textContent.includes('{CALLER_MASKED}')"
            ),
        )
        .await;
    screenshot(&browser, "calls").await;

    // Health, while the call is up: one call now, in the room, and the chart.
    browser
        .click(&browser.find("#nav a[data-route=health]", PAGE).await)
        .await;
    let health = browser
        .wait_until(
            "the health page with one call",
            PAGE,
            "const n = document.getElementById('health-calls-now').textContent;
             const line = document.querySelector('#health-chart svg polyline');
             return n === '1' && line ? [document.getElementById('health-ready').textContent,
               document.querySelector('#health-chart svg').getAttribute('aria-label'),
               document.getElementById('health-by-state').textContent] : null",
        )
        .await;
    assert_eq!(health[0], "Ready");
    assert!(
        health[1].as_str().unwrap_or_default().contains("1 now"),
        "the chart ends at the calls now: {health}"
    );
    assert!(
        health[2].as_str().unwrap_or_default().contains("In room"),
        "calls by state: {health}"
    );
    screenshot(&browser, "health").await;

    // Hang up from the page, through the confirmation dialog; the caller gets a BYE.
    browser
        .click(&browser.find("#nav a[data-route=calls]", PAGE).await)
        .await;
    browser
        .click_css("#calls-body tr[data-call-id] button.hang-up", PAGE)
        .await;
    browser
        .wait_until(
            "the hang-up confirmation",
            PAGE,
            "const d = document.getElementById('confirm');
             return d.open && document.activeElement === document.getElementById('confirm-cancel')",
        )
        .await;
    screenshot(&browser, "calls-confirm").await;
    browser
        .click(&browser.find("#confirm-ok", PAGE).await)
        .await;
    assert!(
        call.wait_for_bye(10 * SECOND).await,
        "the caller gets a BYE after the hang-up on the page"
    );
    browser
        .wait_until(
            "the call gone from the page",
            PAGE,
            "return document.querySelector('#calls-body tr[data-call-id]') === null
               && document.querySelector('#calls-body tr.empty') !== null",
        )
        .await;

    // Revoke, by keyboard: Escape on the dialog keeps the PIN, Enter on "Revoke PIN" revokes.
    browser
        .click(&browser.find("#nav a[data-route=pins]", PAGE).await)
        .await;
    let revoke = browser
        .find(&format!("{row} button.revoke"), PAGE)
        .await;
    browser.send_keys(&revoke, keys::ENTER).await;
    let cancel = browser.find("#confirm-cancel", PAGE).await;
    browser
        .wait_until(
            "the revoke confirmation",
            PAGE,
            "return document.getElementById('confirm').open",
        )
        .await;
    browser.send_keys(&cancel, keys::ESCAPE).await;
    browser
        .wait_until(
            "Escape to close the dialog",
            PAGE,
            "return !document.getElementById('confirm').open",
        )
        .await;
    assert!(
        browser.try_find(&row).await.is_some(),
        "a cancelled revocation keeps the PIN"
    );
    let revoke = browser
        .find(&format!("{row} button.revoke"), PAGE)
        .await;
    browser.send_keys(&revoke, keys::ENTER).await;
    browser
        .wait_until(
            "the revoke confirmation",
            PAGE,
            "return document.getElementById('confirm').open",
        )
        .await;
    let ok = browser.find("#confirm-ok", PAGE).await;
    assert_eq!(browser.text(&ok).await, "Revoke PIN");
    browser.send_keys(&ok, keys::ENTER).await;
    browser
        .wait_until(
            "the revoked PIN gone from the list",
            PAGE,
            &format!(
                "return !document.getElementById('confirm').open
                   && document.querySelector(\"{row}\") === null
                   && document.getElementById('pins-status').textContent === ''"
            ),
        )
        .await;
    let all: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/pins?room=standup&include_revoked=true",
            gw.admin
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /v1/pins")
        .json()
        .await
        .expect("JSON");
    let status = all["pins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["pin"] == pin.as_str()))
        .map(|p| p["revoked"].clone());
    assert_eq!(status, Some(json!(true)), "the store has the PIN revoked");

    // French: the switch translates the page, and the choice survives a reload of the tab.
    let violations = csp_violations(&browser).await;
    assert_no_csp_violations(&violations, "the English pages");
    browser
        .click(&browser.find("#lang option[value=fr]", PAGE).await)
        .await;
    browser
        .wait_until(
            "the French heading",
            PAGE,
            "return document.documentElement.lang === 'fr'
               && document.getElementById('pins-title').textContent === 'Salles et codes PIN'",
        )
        .await;
    screenshot(&browser, "pins-fr").await;
    browser.goto("about:blank").await;
    browser.goto(&format!("{base}#/health")).await;
    let heading = browser
        .wait_until(
            "the French health page after a reload",
            PAGE,
            "const h = document.getElementById('health-title');
             return !document.getElementById('view-health').hidden
               && document.getElementById('health-ready').textContent === 'Prête' ? h.textContent : null",
        )
        .await;
    assert_eq!(heading, json!("État"));
    screenshot(&browser, "health-fr").await;

    // On a phone's width the tables become labelled cards.
    browser.set_window_size(390, 844).await;
    browser.goto(&format!("{base}#/pins")).await;
    browser.find("#pins-body tr[data-pin]", PAGE).await;
    let layout = browser
        .wait_until(
            "the narrow layout",
            PAGE,
            "const td = document.querySelector('#pins-body tr[data-pin] td');
             const head = document.querySelector('#pins-table thead');
             return td && getComputedStyle(td).display === 'flex'
               && head.getBoundingClientRect().height <= 1
               && document.documentElement.scrollWidth <= window.innerWidth
               ? getComputedStyle(td, '::before').content : null",
        )
        .await;
    assert_eq!(layout, json!("\"Salle\""), "each cell names its column");
    screenshot(&browser, "pins-narrow").await;

    let violations = csp_violations(&browser).await;
    assert_no_csp_violations(&violations, "the French pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_is_served_under_a_strict_csp_and_refuses_a_wrong_token() {
    let Some(tools) = tools_or_skip() else { return };
    let gw = Gateway::start(GatewayOptions::default()).await;
    let base = format!("http://{}/ui/", gw.admin);

    // The files carry the policy; module scripts need a JavaScript type.
    let client = reqwest::Client::new();
    for (path, kind) in [
        ("", "text/html"),
        ("console.js", "text/javascript"),
        ("i18n.js", "text/javascript"),
        ("console.css", "text/css"),
    ] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET the console");
        assert_eq!(r.status().as_u16(), 200, "/ui/{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-security-policy"), CSP, "/ui/{path}");
        assert!(
            header("content-type").starts_with(kind),
            "/ui/{path} is {}",
            header("content-type")
        );
    }

    let browser = Browser::start(&tools, 1280, 900).await;
    browser.goto(&base).await;
    browser.find("#token", PAGE).await;

    // Keyboard: the first Tab reaches the skip link, shown while focused.
    browser.press_key(keys::TAB).await;
    let skip = browser
        .wait_until(
            "the focused skip link",
            PAGE,
            "const a = document.activeElement;
             return a && a.classList.contains('skip-link') && a.getBoundingClientRect().top >= 0
               ? a.getAttribute('href') : null",
        )
        .await;
    assert_eq!(skip, json!("#main"));
    // Every form control has a label.
    let unlabelled = browser
        .execute(
            "return [...document.querySelectorAll('input, select')]
               .filter(e => e.labels === null || e.labels.length === 0).map(e => e.id)",
            Vec::new(),
        )
        .await;
    assert_eq!(unlabelled, json!([]), "controls without a <label>");
    screenshot(&browser, "signin").await;

    // A wrong token: an error on the form, nothing kept.
    sign_in(&browser, "not-the-token").await;
    let error = browser
        .wait_until(
            "the sign-in error",
            PAGE,
            "const e = document.getElementById('signin-error');
             return e.hidden ? null : e.textContent",
        )
        .await;
    assert_eq!(error, json!("The token was refused. Check it and try again."));
    let kept = browser
        .execute(
            "return [sessionStorage.length, localStorage.length, document.getElementById('view-pins').hidden]",
            Vec::new(),
        )
        .await;
    assert_eq!(kept, json!([0, 0, true]));
    screenshot(&browser, "signin-error").await;

    // The right token; then a token that stops working sends the page back to sign-in.
    sign_in(&browser, TOKEN).await;
    browser
        .wait_until(
            "the PINs page",
            PAGE,
            "return !document.getElementById('view-pins').hidden",
        )
        .await;
    browser
        .execute(
            "sessionStorage.setItem('dialin.console.token', 'changed-since'); return true",
            Vec::new(),
        )
        .await;
    browser.goto("about:blank").await;
    browser.goto(&format!("{base}#/calls")).await;
    let expired = browser
        .wait_until(
            "the sign-in form after a refused token",
            PAGE,
            "const e = document.getElementById('signin-error');
             return !document.getElementById('view-signin').hidden && !e.hidden ? e.textContent : null",
        )
        .await;
    assert!(
        expired.as_str().unwrap_or_default().contains("Sign in again"),
        "{expired}"
    );
    assert_eq!(
        browser
            .execute("return sessionStorage.getItem('dialin.console.token')", Vec::new())
            .await,
        json!(null),
        "a refused token is forgotten"
    );

    // Sign out clears the token.
    sign_in(&browser, TOKEN).await;
    browser
        .click(&browser.find("#sign-out", PAGE).await)
        .await;
    browser
        .wait_until(
            "the sign-in form after signing out",
            PAGE,
            "return !document.getElementById('view-signin').hidden
               && sessionStorage.getItem('dialin.console.token') === null",
        )
        .await;

    // No violation so far, and the recorder does see one (an inline style set by hand).
    let violations = csp_violations(&browser).await;
    assert_no_csp_violations(&violations, "the sign-in page");
    browser
        .execute(
            "document.body.setAttribute('style', 'color: red'); return true",
            Vec::new(),
        )
        .await;
    let seen = browser
        .wait_until(
            "the recorded violation of an inline style",
            PAGE,
            "return window.__cspViolations.length > 0 ? window.__cspViolations : null",
        )
        .await;
    assert!(seen.to_string().contains("style-src"), "{seen}");
}

//! The web console's files, built into the binary and served at `/ui/` by the admin
//! listener: no separate server, no CDN, works offline. The page signs in with the admin
//! token and calls the same `/v1` API as everyone else, so it can do nothing the API does not
//! already allow.
//!
//! Every file goes out with a strict Content-Security-Policy (scripts, styles and fetches
//! from this origin only; no inline code, no frames, no forms posting elsewhere), `nosniff`,
//! no referrer and no caching (the page is small, and an upgrade must not mix versions).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

/// The policy of every console file.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's files: name, content type, content.
const FILES: [(&str, &str, &str); 4] = [
    ("index.html", "text/html; charset=utf-8", include_str!("console/index.html")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("console/console.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("console/console.css")),
    ("i18n.js", "text/javascript; charset=utf-8", include_str!("console/i18n.js")),
];

fn file(name: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY))],
            "no such file",
        )
            .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        *body,
    )
        .into_response()
}

/// `/ui/`: the page.
pub async fn index() -> Response {
    file("index.html")
}

/// `/ui`: to `/ui/`, so that relative links resolve.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `/ui/{file}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_files_are_not_found_and_known_ones_carry_the_policy() {
        let r = file("../secret");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = file("console.js");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers().get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()),
            Some(CONTENT_SECURITY_POLICY)
        );
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"), "no unsafe-inline nor unsafe-eval");
    }
}

//! UAS request validation (RFC 3261 §8.2.1–§8.2.3, §16.3 header checks).
//!
//! After a request parses and before a transaction/dialog acts on it,
//! [`check_request`] runs the checks RFC 3261 §8.2 orders a UAS to make and says
//! which error response to send: missing or duplicated mandatory headers and a
//! CSeq/method mismatch (400), unknown methods (501), unsupported URI schemes
//! (416), unknown required extensions (420 with `Unsupported`), unsupported body
//! types (415 with `Accept`), an `Accept` we cannot answer (406). Responses are
//! checked with [`check_response`]: a malformed one is dropped (RFC 3261 §18.1.2).

use crate::header::{HeaderName, BRANCH_MAGIC_COOKIE};
use crate::message::{Method, Request, Response, StatusCode, Text};

/// What this UAS accepts.
#[derive(Debug, Clone)]
pub struct ValidationPolicy {
    /// Methods the UA implements; others get 501 (RFC 3261 §8.2.1).
    pub implemented_methods: Vec<Method>,
    /// Request-URI schemes served; others get 416 (RFC 3261 §8.2.2.1).
    pub uri_schemes: Vec<&'static str>,
    /// Option tags we support; unknown ones in Require get 420 (RFC 3261 §8.2.2.3).
    pub supported: Vec<&'static str>,
    /// Check Proxy-Require like Require (a UAS that is the first hop may see it).
    pub check_proxy_require: bool,
    /// Body types understood (`type/subtype`); others get 415 (RFC 3261 §8.2.3).
    pub accepted_bodies: Vec<(&'static str, &'static str)>,
    /// Body type an INVITE's response must be able to carry (406 if `Accept` excludes it).
    pub invite_answer_type: Option<(&'static str, &'static str)>,
    /// Reject `branch=z9hG4bK` with nothing after the cookie (RFC 4475 §3.2.1).
    pub reject_empty_branch: bool,
}

impl Default for ValidationPolicy {
    fn default() -> ValidationPolicy {
        use Method::*;
        ValidationPolicy {
            implemented_methods: vec![
                Invite, Ack, Bye, Cancel, Options, Info, Update, Prack, Register, Subscribe,
                Notify, Refer, Message,
            ],
            uri_schemes: vec!["sip", "sips", "tel"],
            supported: vec!["timer", "100rel", "replaces", "path", "outbound"],
            check_proxy_require: true,
            accepted_bodies: vec![
                ("application", "sdp"),
                ("application", "dtmf-relay"),
                ("application", "dtmf"),
                ("multipart", "mixed"),
                ("multipart", "alternative"),
                ("text", "plain"),
            ],
            invite_answer_type: Some(("application", "sdp")),
            reject_empty_branch: true,
        }
    }
}

/// An error response to send instead of processing the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
    /// Headers the response must carry (`Unsupported`, `Accept`, `Allow`...).
    pub headers: Vec<(HeaderName, Text)>,
}

impl Rejection {
    fn new(status: StatusCode, reason: &'static str) -> Rejection {
        Rejection {
            status,
            reason,
            headers: Vec::new(),
        }
    }

    /// The response to `req` carrying this rejection (To tag not added).
    pub fn to_response(&self, req: &Request) -> Response {
        let mut resp = Response::to_request(req, self.status, Some(self.reason));
        for (n, v) in &self.headers {
            resp.headers.push(n.clone(), v.clone());
        }
        resp
    }
}

/// Runs the RFC 3261 §8.2 UAS checks, in the RFC's order where it gives one.
pub fn check_request(req: &Request, policy: &ValidationPolicy) -> Result<(), Rejection> {
    let bad = |reason| Err(Rejection::new(StatusCode::BAD_REQUEST, reason));
    let h = &req.headers;

    // Mandatory headers, once each (RFC 3261 §8.1.1, RFC 4475 §3.3.1, §3.3.8).
    let vias = match h.via() {
        Ok(v) => v,
        Err(_) => return bad("Bad or Missing Via"),
    };
    if h.from().is_err() {
        return bad("Bad or Missing From");
    }
    let to = match h.to() {
        Ok(t) => t,
        Err(_) => return bad("Bad or Missing To"),
    };
    if h.call_id().is_err() {
        return bad("Bad or Missing Call-ID");
    }
    let cseq = match h.cseq() {
        Ok(c) => c,
        Err(_) => return bad("Bad or Missing CSeq"),
    };
    if h.max_forwards().is_err() {
        return bad("Bad Max-Forwards");
    }
    if h.content_length().is_err() {
        return bad("Bad Content-Length");
    }
    let content_type = match h.content_type() {
        Ok(c) => c,
        Err(_) => return bad("Bad Content-Type"),
    };
    if policy.reject_empty_branch {
        if let Some(top) = vias.first() {
            if top.branch() == Some(BRANCH_MAGIC_COOKIE) {
                return bad("Bad Via branch");
            }
        }
    }

    // Method (RFC 3261 §8.2.1): unknown → 501, checked before the CSeq match so
    // that an unknown method with a mismatched CSeq gets 501 (RFC 4475 §3.1.2.18).
    if !policy.implemented_methods.contains(&req.method) {
        let mut r = Rejection::new(StatusCode::NOT_IMPLEMENTED, "Not Implemented");
        let allow: Vec<&str> = policy
            .implemented_methods
            .iter()
            .map(|m| m.as_str())
            .collect();
        r.headers
            .push((HeaderName::Allow, Text::from(allow.join(", "))));
        return Err(r);
    }
    if cseq.method != req.method {
        return bad("CSeq method does not match request method");
    }

    // Request-URI scheme (RFC 3261 §8.2.2.1).
    if !policy
        .uri_schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(req.uri.scheme()))
    {
        return Err(Rejection::new(
            StatusCode::UNSUPPORTED_URI_SCHEME,
            "Unsupported URI Scheme",
        ));
    }
    // A registrar only binds SIP/SIPS addresses-of-record (RFC 3261 §10.3 step 5; RFC 4475 §3.3.4).
    if req.method == Method::Register && !to.uri.is_sip() {
        return bad("To is not a SIP or SIPS URI");
    }

    // Require / Proxy-Require (RFC 3261 §8.2.2.3). ACK and CANCEL are exempt.
    if req.method != Method::Ack && req.method != Method::Cancel {
        let mut unsupported: Vec<Text> = Vec::new();
        let mut tags = h.require();
        if policy.check_proxy_require {
            tags.extend(h.proxy_require());
        }
        for t in tags {
            if !policy.supported.iter().any(|s| s.eq_ignore_ascii_case(&t))
                && !unsupported.contains(&t)
            {
                unsupported.push(t);
            }
        }
        if !unsupported.is_empty() {
            let list: Vec<&str> = unsupported.iter().map(|t| t.as_str()).collect();
            let mut r = Rejection::new(StatusCode::BAD_EXTENSION, "Bad Extension");
            r.headers
                .push((HeaderName::Unsupported, Text::from(list.join(", "))));
            return Err(r);
        }
    }

    // Body type (RFC 3261 §8.2.3).
    if !req.body.is_empty() {
        let ok = match &content_type {
            Some(ct) => policy.accepted_bodies.iter().any(|(t, s)| ct.is(t, s)),
            // RFC 3261 §20.15: a body without Content-Type is taken as application/sdp only by
            // lenient peers; we refuse it as unsupported.
            None => false,
        };
        if !ok {
            let list: Vec<String> = policy
                .accepted_bodies
                .iter()
                .map(|(t, s)| format!("{t}/{s}"))
                .collect();
            let mut r =
                Rejection::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type");
            r.headers
                .push((HeaderName::Accept, Text::from(list.join(", "))));
            return Err(r);
        }
    }

    // Accept on INVITE must allow our answer's type (RFC 3261 §21.4.7; RFC 4475 §3.3.15).
    if req.method == Method::Invite {
        if let Some((t, s)) = policy.invite_answer_type {
            match h.accept() {
                Err(_) => return bad("Bad Accept"),
                Ok(ranges) if !ranges.is_empty() && !ranges.iter().any(|m| m.covers(t, s)) => {
                    let mut r = Rejection::new(StatusCode::NOT_ACCEPTABLE, "Not Acceptable");
                    r.headers
                        .push((HeaderName::Accept, Text::from(format!("{t}/{s}"))));
                    return Err(r);
                }
                Ok(_) => {}
            }
        }
    }
    Ok(())
}

/// Why a received response is dropped (RFC 3261 §18.1.2, RFC 4475 §3.1.2.5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseDrop {
    #[error("response has a bad or missing {0}")]
    BadHeader(&'static str),
}

/// Checks the headers a UAC needs to match a response to its transaction.
pub fn check_response(resp: &Response) -> Result<(), ResponseDrop> {
    let h = &resp.headers;
    h.top_via().map_err(|_| ResponseDrop::BadHeader("Via"))?;
    h.from().map_err(|_| ResponseDrop::BadHeader("From"))?;
    h.to().map_err(|_| ResponseDrop::BadHeader("To"))?;
    h.call_id()
        .map_err(|_| ResponseDrop::BadHeader("Call-ID"))?;
    h.cseq().map_err(|_| ResponseDrop::BadHeader("CSeq"))?;
    h.content_length()
        .map_err(|_| ResponseDrop::BadHeader("Content-Length"))?;
    if let Some(ra) = h.get(&HeaderName::RetryAfter) {
        let secs = ra.split([';', '(']).next().unwrap_or("").trim();
        if crate::header::parse_delta(secs).is_none() {
            return Err(ResponseDrop::BadHeader("Retry-After"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Limits, Message};
    use bytes::Bytes;

    fn req(extra: &str, method: &str, cseq_method: &str) -> Request {
        let s = format!(
            "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKa\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: x\r\n\
CSeq: 1 {cseq_method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match Message::parse(Bytes::from(s), &Limits::default()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn well_formed_invite_passes() {
        assert_eq!(
            check_request(&req("", "INVITE", "INVITE"), &ValidationPolicy::default()),
            Ok(())
        );
    }

    #[test]
    fn unknown_require_is_420_listing_unsupported_tags() {
        let r = check_request(
            &req("Require: foo, timer\r\n", "INVITE", "INVITE"),
            &ValidationPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_EXTENSION);
        assert_eq!(
            r.headers,
            vec![(HeaderName::Unsupported, Text::from_static("foo"))]
        );
    }

    #[test]
    fn cseq_method_mismatch_is_400() {
        let r = check_request(&req("", "INVITE", "BYE"), &ValidationPolicy::default()).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unknown_method_is_501_with_allow() {
        let r = check_request(&req("", "FOO", "FOO"), &ValidationPolicy::default()).unwrap_err();
        assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            r.headers.first().map(|h| h.0.clone()),
            Some(HeaderName::Allow)
        );
    }

    #[test]
    fn rejection_builds_a_response_with_its_headers() {
        let rq = req("Require: foo\r\n", "INVITE", "INVITE");
        let rej = check_request(&rq, &ValidationPolicy::default()).unwrap_err();
        let resp = rej.to_response(&rq);
        assert_eq!(resp.status, StatusCode::BAD_EXTENSION);
        assert_eq!(
            resp.headers
                .get(&HeaderName::Unsupported)
                .map(|t| t.as_str()),
            Some("foo")
        );
    }
}

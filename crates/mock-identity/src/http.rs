//! Requests and responses as the handlers see them, their hyper form, and
//! `application/x-www-form-urlencoded` coding.

use std::collections::HashMap;

use serde_json::Value;

/// A request as the handlers see it (read by hyper).
pub(super) struct HttpRequest {
    /// `GET`, `POST`, ...
    pub(super) method: String,
    /// The path, without the query.
    pub(super) path: String,
    /// The query string, decoded.
    pub(super) query: HashMap<String, String>,
    /// Header names (lower case) and values.
    pub(super) headers: HashMap<String, String>,
    /// The body, at most [`super::MAX_BODY`] bytes.
    pub(super) body: Vec<u8>,
}

/// A response to write.
pub(super) struct HttpResponse {
    /// The HTTP status code.
    pub(super) status: u16,
    /// The body (JSON but for `/healthz` and an injected 500).
    pub(super) body: String,
}

impl HttpResponse {
    /// A JSON response.
    pub(super) fn json(status: u16, value: &Value) -> Self {
        HttpResponse {
            status,
            body: value.to_string(),
        }
    }
}

/// The hyper response for `r` (always JSON, like the real endpoints).
pub(super) fn to_http(r: HttpResponse) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut out = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(r.body)));
    *out.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    out
}

/// Decodes `application/x-www-form-urlencoded` (also used for query strings).
pub fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Undoes percent-encoding (and `+` for a space); a bad escape is kept as it is.
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

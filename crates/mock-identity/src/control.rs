//! `/control/*`: failure injection, the token lifetime, the assigned managed identities, and
//! the lists of issued tokens and requests (see [`super::USAGE`]).

use std::time::Duration;

use serde_json::{json, Value};

use super::http::HttpResponse;
use super::state::{FailMode, Mock, State};

impl Mock {
    /// Answers `/control/{what}`.
    pub(super) fn control(&self, method: &str, what: &str, body: &[u8]) -> HttpResponse {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut st = self.lock();
        match (method, what) {
            ("POST", "fail") => {
                let mode = match &body["mode"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                let mode = match mode.as_str() {
                    "500" => Some(FailMode::ServerError),
                    "400" | "aad" => Some(FailMode::AadError),
                    "malformed" => Some(FailMode::Malformed),
                    "hang" => Some(FailMode::Hang),
                    "none" | "" => None,
                    other => {
                        return HttpResponse::json(
                            400,
                            &json!({"error": format!("unknown mode {other}")}),
                        )
                    }
                };
                st.failure = mode.map(|m| (m, body["count"].as_u64()));
                HttpResponse::json(200, &json!({"ok": true}))
            }
            ("POST", "lifetime") => match body["seconds"].as_u64() {
                Some(s) if s > 0 => {
                    st.lifetime = Some(Duration::from_secs(s));
                    HttpResponse::json(200, &json!({"ok": true}))
                }
                _ => HttpResponse::json(400, &json!({"error": "seconds must be > 0"})),
            },
            ("POST", "identities") => match body["client_ids"].as_array() {
                Some(ids) => {
                    st.assigned_identities = Some(
                        ids.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                    );
                    HttpResponse::json(200, &json!({"ok": true}))
                }
                None => HttpResponse::json(400, &json!({"error": "client_ids must be a list"})),
            },
            ("POST", "reset") => {
                *st = State::default();
                HttpResponse::json(200, &json!({"ok": true}))
            }
            ("GET", "issued") => HttpResponse::json(200, &Value::Array(st.issued.clone())),
            ("GET", "requests") => HttpResponse::json(200, &Value::Array(st.requests.clone())),
            _ => HttpResponse::json(404, &json!({"error": "unknown control"})),
        }
    }
}

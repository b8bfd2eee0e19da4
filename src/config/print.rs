//! `--print-config`: the effective settings as TOML that loads back, secrets redacted.

use std::fmt;

use super::Settings;

impl Settings {
    /// The settings as TOML, every key present (unset ones commented out), with any value
    /// that could be a secret replaced by `"<redacted>"`. File paths are shown, not contents.
    pub fn redacted_toml(&self) -> String {
        let json = serde_json::to_string(self).expect("Settings serializes to JSON");
        let fields = ordered_fields(&json);
        let mut out = String::new();
        for (key, value) in fields {
            if key == "upstreams" {
                continue; // arrays of tables come after every top-level key in TOML
            }
            let value = redact(&key, value);
            match value {
                serde_json::Value::Null => out.push_str(&format!("# {key} = (not set)\n")),
                v => out.push_str(&format!("{key} = {}\n", toml_value(&v))),
            }
        }
        for entry in &self.upstreams {
            out.push_str("\n[[upstreams]]\n");
            let entry = serde_json::to_string(entry).expect("upstream entries serialize");
            for (key, value) in ordered_fields(&entry) {
                match redact(&key, value) {
                    serde_json::Value::Null => {}
                    v => out.push_str(&format!("{key} = {}\n", toml_value(&v))),
                }
            }
        }
        out
    }
}

/// Replaces a value that may hold a secret. A key whose name mentions a secret, password or
/// token is redacted unless it is a file path (`*_file`) or a known non-secret tuning value.
pub(super) fn redact(key: &str, value: serde_json::Value) -> serde_json::Value {
    const NOT_SECRET: &[&str] = &["token_file_poll", "token_timeout"];
    let sensitive = ["secret", "password", "token"]
        .iter()
        .any(|w| key.contains(w));
    if !sensitive || key.ends_with("_file") || NOT_SECRET.contains(&key) || value.is_null() {
        value
    } else {
        serde_json::Value::String("<redacted>".into())
    }
}

/// The top-level fields of a JSON object, in the order written (serde writes struct order).
pub(super) fn ordered_fields(json: &str) -> Vec<(String, serde_json::Value)> {
    struct Fields;
    impl<'de> serde::de::Visitor<'de> for Fields {
        type Value = Vec<(String, serde_json::Value)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    serde::Deserializer::deserialize_map(&mut de, Fields).expect("JSON of a struct is an object")
}

/// A JSON scalar or array as a TOML value (JSON string escapes are valid in TOML basic strings).
fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 {
                format!("{f:.1}")
            } else {
                n.to_string()
            }
        }
        other => other.to_string(),
    }
}

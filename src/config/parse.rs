//! Values written as text: whole counts and durations (`HOST[:PORT]` is
//! [`crate::addr::HostPort`]). Parsed once, at start-up.

/// Whole, non-negative counts. The `config` crate would round `1.5` to `2`; a count written
/// as a fraction is refused instead.
pub mod count {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};

    /// serde: accept a non-negative integer, or a string of one (from the environment).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        struct Count;
        impl Visitor<'_> for Count {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::custom(format!("{v} is not a whole number >= 0")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<usize, E> {
                Err(E::custom(format!("{v} is not a whole number")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
                v.trim()
                    .parse()
                    .map_err(|_| E::custom(format!("{v:?} is not a whole number >= 0")))
            }
        }
        d.deserialize_any(Count)
    }
}

/// Durations as human strings: `250ms`, `5s`, `3m`, `1h` (a bare number is seconds).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses `250ms`, `5s`, `1.5s`, `3m`, `1h`, or a bare number of seconds.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (examples: 250ms, 5s, 3m, 1h)"))?;
        let secs = match unit.trim() {
            "ms" => value / 1000.0,
            "" | "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}` (use ms, s, m or h)"
                ))
            }
        };
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(format!("`{s}` is out of range"));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// Formats a duration the way [`parse`] reads it.
    pub fn format(d: Duration) -> String {
        let ms = d.as_millis();
        if ms % 1000 != 0 {
            format!("{ms}ms")
        } else {
            let s = d.as_secs();
            if s != 0 && s % 3600 == 0 {
                format!("{}h", s / 3600)
            } else if s != 0 && s % 60 == 0 {
                format!("{}m", s / 60)
            } else {
                format!("{s}s")
            }
        }
    }

    /// serde: serialize as a string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// serde: accept a string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(f64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => parse(&s).map_err(serde::de::Error::custom),
            Raw::N(n) => parse(&n.to_string()).map_err(serde::de::Error::custom),
        }
    }
}

//! The machinery behind the key table in `keys`: one `config_keys!` invocation declares every
//! key once and generates from it
//! - [`Settings`](super::Settings), the merged result (every key with its default);
//! - [`Layer`](super::Layer), every key optional: what one source (the file with the
//!   environment, or the flags) sets; the flags embed it with clap's `flatten`;
//! - [`UpstreamSettings`](super::UpstreamSettings), one `[[upstreams]]` entry: `name` and
//!   the keys marked `upstream` or `identity`, all optional;
//! - [`Layer::merge`](super::Layer::merge) and [`Layer::apply_to`](super::Layer::apply_to),
//!   the list of keys an `[[upstreams]]` entry may set, and
//!   `Settings::identity_key`.
//!
//! How values are written in TOML and in the environment is [`codec`], chosen by the Rust type
//! of the key, so the table carries no serde attributes.

/// The Rust type of a [`Settings`](super::Settings) field: `opt T` is `Option<T>` (unset is
/// meaningful), `val T` is `T` (there is always a value).
macro_rules! setting_ty {
    (opt $t:ty) => { Option<$t> };
    (val $t:ty) => { $t };
}

/// Writes a value a layer set onto the matching [`Settings`](super::Settings) field.
macro_rules! set_value {
    (opt $dst:expr, $v:expr) => {
        $dst = Some($v)
    };
    (val $dst:expr, $v:expr) => {
        $dst = $v
    };
}

/// Collects the keys marked `upstream` or `identity`, and those marked `identity` (a
/// tt-muncher), then generates [`UpstreamSettings`](super::UpstreamSettings),
/// `UPSTREAM_KEYS` and `Settings::identity_key` from them.
macro_rules! upstream_entry {
    (@acc [$($acc:tt)*] [$($id:tt)*] upstream $key:ident : $inner:ty; $($rest:tt)*) => {
        upstream_entry!(@acc [$($acc)* $key : $inner;] [$($id)*] $($rest)*);
    };
    (@acc [$($acc:tt)*] [$($id:tt)*] identity $key:ident : $inner:ty; $($rest:tt)*) => {
        upstream_entry!(@acc [$($acc)* $key : $inner;] [$($id)* $key] $($rest)*);
    };
    (@acc [$($acc:tt)*] [$($id:tt)*] top $key:ident : $inner:ty; $($rest:tt)*) => {
        upstream_entry!(@acc [$($acc)*] [$($id)*] $($rest)*);
    };
    (@acc [$($key:ident : $inner:ty;)*] [$($id:ident)*]) => {
        /// One entry of `[[upstreams]]`. Every key but `name` is optional and defaults to the
        /// top-level key of the same name; only the keys marked `upstream` in the key table
        /// exist here.
        #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct UpstreamSettings {
            /// Label of this upstream in logs and metrics: letters, digits, `-` and `_`.
            pub name: String,
            $(
                #[doc = concat!("See [`Settings::", stringify!($key), "`].")]
                #[serde(with = "codec")]
                pub $key: Option<$inner>,
            )*
        }

        impl UpstreamSettings {
            /// The keys this entry sets, as a layer to put over the top-level settings.
            pub fn layer(&self) -> Layer {
                Layer {
                    $($key: self.$key.clone(),)*
                    ..Layer::default()
                }
            }
        }

        /// Keys an `[[upstreams]]` entry can set (errors about them name the entry).
        pub(super) const UPSTREAM_KEYS: &[&str] = &["name", $(stringify!($key),)*];

        impl Settings {
            /// What identifies a token: the keys marked `identity` (the credential,
            /// everything that selects the identity, the scope and the username). Upstreams
            /// with the same key share one token manager.
            pub(super) fn identity_key(&self) -> String {
                serde_json::Value::Array(vec![
                    $(serde_json::to_value(&self.$id).unwrap_or_default(),)*
                ])
                .to_string()
            }
        }
    };
}

/// The key table's expansion; see the module documentation. Each entry is
///
/// ```text
/// /// Help of the flag (also the field's documentation).
/// #[arg(long, ...)]                     // clap attributes of the flag
/// key: opt|val Type = default, top|upstream|identity;
/// ```
macro_rules! config_keys {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $key:ident : $kind:ident $inner:ty = $default:expr, $scope:ident;
    )*) => {
        /// The whole configuration, merged from defaults < file < environment < flags. Every
        /// field has a default; see `config/entra-redis-proxy.toml`.
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[doc = $doc])*
                #[serde(with = "codec")]
                pub $key: setting_ty!($kind $inner),
            )*
            /// Several caches from one proxy: each entry has its own listener, cache and
            /// identity; keys it leaves out take the top-level value. Empty: one cache, from
            /// the top-level keys.
            pub upstreams: Vec<UpstreamSettings>,
        }

        impl Settings {
            /// The first key (in table order) whose value is an empty path, if any: a path
            /// key is either unset or a path.
            pub(super) fn empty_path_key(&self) -> Option<&'static str> {
                use codec::Codec as _;
                $(
                    if self.$key.is_empty_path() {
                        return Some(stringify!($key));
                    }
                )*
                None
            }
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings {
                    $($key: $default,)*
                    upstreams: Vec::new(),
                }
            }
        }

        /// What one source sets: every key optional. The file and the environment fill one
        /// (through the `config` crate, file < environment), the flags another; they are
        /// merged with [`Layer::merge`] and applied over the defaults with
        /// [`Layer::apply_to`].
        #[derive(Debug, Clone, Default, serde::Deserialize, clap::Args)]
        #[serde(default, deny_unknown_fields)]
        pub struct Layer {
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                #[serde(with = "codec")]
                pub $key: Option<$inner>,
            )*
            /// `[[upstreams]]` entries (file only).
            #[arg(skip)]
            pub upstreams: Option<Vec<UpstreamSettings>>,
        }

        impl Layer {
            /// Puts `over` over `self`: every key `over` sets replaces this layer's value.
            pub fn merge(&mut self, over: Layer) {
                $(
                    if over.$key.is_some() {
                        self.$key = over.$key;
                    }
                )*
                if over.upstreams.is_some() {
                    self.upstreams = over.upstreams;
                }
            }

            /// Writes every key this layer sets over `s`.
            pub fn apply_to(self, s: &mut Settings) {
                $(
                    if let Some(v) = self.$key {
                        set_value!($kind s.$key, v);
                    }
                )*
                if let Some(v) = self.upstreams {
                    s.upstreams = v;
                }
            }
        }

        upstream_entry!(@acc [] [] $($scope $key : $inner;)*);
    };
}

/// How a key's value is read from TOML or the environment and written by `--print-config`,
/// by Rust type: counts ([`count`](super::count)) refuse fractions, durations
/// ([`duration`](super::duration)) are `5s`-style strings, everything else is serde's own.
/// `Option<T>` is `T` or unset. Used as `#[serde(with = "codec")]` on every generated field.
pub(super) mod codec {
    use std::path::PathBuf;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::super::{count, duration, CredentialKind, LogFormat};

    /// A value type of the key table.
    pub trait Codec: Sized {
        /// Reads a value.
        fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
        /// Writes a value.
        fn ser<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
        /// True for a path that is set but empty (`ca_file = ""`), refused by validation.
        fn is_empty_path(&self) -> bool {
            false
        }
    }

    /// serde `with`: read.
    pub fn deserialize<'de, T: Codec, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::de(d)
    }

    /// serde `with`: write.
    pub fn serialize<T: Codec, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.ser(s)
    }

    macro_rules! native {
        ($($t:ty),*) => {$(
            impl Codec for $t {
                fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    <$t>::deserialize(d)
                }
                fn ser<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    self.serialize(s)
                }
            }
        )*};
    }
    native!(String, bool, f64, Vec<String>, CredentialKind, LogFormat);

    impl Codec for PathBuf {
        fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            PathBuf::deserialize(d)
        }
        fn ser<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.serialize(s)
        }
        fn is_empty_path(&self) -> bool {
            self.as_os_str().is_empty()
        }
    }

    impl Codec for usize {
        fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            count::deserialize(d)
        }
        fn ser<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.serialize(s)
        }
    }

    impl Codec for Duration {
        fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            duration::deserialize(d)
        }
        fn ser<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            duration::serialize(self, s)
        }
    }

    /// `T` through its codec, for `Option<T>`.
    struct Via<T>(T);

    impl<'de, T: Codec> Deserialize<'de> for Via<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            T::de(d).map(Via)
        }
    }

    impl<T: Codec> Codec for Option<T> {
        fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(Option::<Via<T>>::deserialize(d)?.map(|v| v.0))
        }
        fn ser<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Some(v) => s.serialize_some(&ViaRef(v)),
                None => s.serialize_none(),
            }
        }
        fn is_empty_path(&self) -> bool {
            self.as_ref().is_some_and(T::is_empty_path)
        }
    }

    /// `&T` through its codec, for writing `Some(T)`.
    struct ViaRef<'a, T>(&'a T);

    impl<T: Codec> Serialize for ViaRef<'_, T> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.ser(s)
        }
    }
}

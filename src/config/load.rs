//! Loading: defaults < `--config` file < `ENTRA_REDIS_PROXY_*` variables < flags, merged with
//! the `config` crate, whose errors are translated into [`ConfigError`]s naming the key.

use std::collections::HashMap;
use std::ffi::OsString;

use clap::{Parser, ValueEnum};

use super::{
    env_var_name, Cli, ConfigError, CredentialKind, Layer, LogFormat, Settings, ENV_PREFIX,
};

/// What [`load_from`] returns: the merged settings and what the command line asked for.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Defaults < file < environment < flags. Not yet validated: call [`Settings::validate`].
    pub settings: Settings,
    /// `--print-config` was given: print [`Settings::redacted_toml`] and exit.
    pub print_config: bool,
}

/// Parses `args` (the program name first, as for clap) and layers defaults < `--config` file <
/// `ENTRA_REDIS_PROXY_*` variables of this process < flags.
pub fn load_from<I, T>(args: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut env = HashMap::new();
    let prefix = format!("{ENV_PREFIX}_");
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !name.to_ascii_uppercase().starts_with(&prefix) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError::NonUnicodeEnv {
                name: name.to_owned(),
            })?;
        env.insert(name.to_owned(), value);
    }
    load_from_env(args, &env)
}

/// As [`load_from`], with the environment given as a map (variables without our prefix are
/// ignored), so that tests do not depend on or change the process environment.
pub fn load_from_env<I, T>(args: I, env: &HashMap<String, String>) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let prefix = format!("{ENV_PREFIX}_");
    // Only our variables, keyed by their upper-case name so origins can be reported.
    let ours: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.to_ascii_uppercase().starts_with(&prefix))
        .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
        .collect();

    let mut builder = config::Config::builder();
    if let Some(path) = &cli.config {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }

    // `listen` is a list: the variable holds comma-separated entries. Everything else goes
    // through the config crate as strings, converted to the field's type on deserialization
    // (no guessing, so `ENTRA_REDIS_PROXY_USERNAME=0123` stays the string "0123").
    let listen_var = env_var_name("listen");
    let mut scalars = ours.clone();
    if let Some(list) = scalars.remove(&listen_var) {
        let entries: Vec<String> = list.split(',').map(|e| e.trim().to_owned()).collect();
        builder = builder
            .set_override("listen", entries)
            .map_err(|e| ConfigError::BadValue {
                key: "listen".into(),
                origin: format!("from {listen_var}"),
                reason: e.to_string(),
            })?;
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .source(Some(scalars)),
    );

    let origin_of = |key: &str| -> String {
        let var = env_var_name(key);
        if ours.contains_key(&var) {
            format!("from environment variable {var}")
        } else if let Some(path) = &cli.config {
            format!("in config file {}", path.display())
        } else {
            "from the environment".into()
        }
    };
    let mut layer: Layer =
        builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| match e {
                config::ConfigError::FileParse { cause, .. } => ConfigError::ParseFile {
                    path: cli.config.clone().unwrap_or_default(),
                    reason: cause.to_string(),
                },
                e => translate_config_error(e, &origin_of),
            })?;

    layer.merge(cli.layer); // flags last: they override everything
    let mut settings = Settings::default();
    layer.apply_to(&mut settings);
    let print_config = cli.print_config;
    Ok(Loaded {
        settings,
        print_config,
    })
}

/// Turns the `config` crate's error into ours, naming the key and where its value came from.
fn translate_config_error(
    e: config::ConfigError,
    origin_of: &dyn Fn(&str) -> String,
) -> ConfigError {
    use config::ConfigError as C;
    match e {
        C::Type { ref key, .. } | C::At { ref key, .. } => {
            let key = key.clone().unwrap_or_default();
            let reason = match &e {
                C::Type {
                    unexpected,
                    expected,
                    ..
                } => format!("found {unexpected}, expected {expected}"),
                C::At { error, .. } => error.to_string(),
                _ => unreachable!(),
            };
            // A nested key (`a.b`) is reported by its top-level name, which is what exists.
            let top = key.split(['.', '[']).next().unwrap_or_default().to_owned();
            if let Some(unknown) = unknown_field(&reason) {
                let key = if top.is_empty() {
                    unknown
                } else {
                    format!("{top}.{unknown}")
                };
                return ConfigError::UnknownKey {
                    origin: origin_of(&key),
                    key,
                };
            }
            let reason = match allowed_values(&top) {
                Some(allowed) => format!("{reason} (expected one of: {allowed})"),
                None => reason,
            };
            ConfigError::BadValue {
                origin: origin_of(&top),
                key: top,
                reason,
            }
        }
        C::Message(ref m) => match unknown_field(m) {
            Some(key) => ConfigError::UnknownKey {
                origin: origin_of(&key),
                key,
            },
            None => ConfigError::Other(m.clone()),
        },
        other => ConfigError::Other(other.to_string()),
    }
}

/// The accepted spellings of an enum-valued key, for error messages.
fn allowed_values(key: &str) -> Option<String> {
    fn names<T: ValueEnum>() -> String {
        T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    }
    match key {
        "credential" => Some(names::<CredentialKind>()),
        "log_format" => Some(names::<LogFormat>()),
        _ => None,
    }
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

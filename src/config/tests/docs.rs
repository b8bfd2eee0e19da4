//! Every key has a flag, a line in the example file with its true default, and a row in the
//! docs.

use super::super::print::ordered_fields;
use super::*;

/// Every key, in struct order.
fn all_keys() -> Vec<String> {
    ordered_fields(&serde_json::to_string(&Settings::default()).unwrap())
        .into_iter()
        .map(|(k, _)| k)
        // `[[upstreams]]` tables exist only in the file (tested on their own).
        .filter(|k| k != "upstreams")
        .collect()
}

#[test]
fn example_file_documents_every_key_with_its_true_default() {
    let example = include_str!("../../../config/entra-redis-proxy.toml");
    // Uncomment every `# key = value` line: the result must load, and every key that has
    // a default must come out equal to it.
    let uncommented: String = example
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ")
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let loaded = load(Some(&uncommented), &[], &[]).unwrap();
    let defaults = ordered_fields(&serde_json::to_string(&Settings::default()).unwrap());
    let example_values = ordered_fields(&serde_json::to_string(&loaded).unwrap());
    for key in all_keys() {
        assert!(
            uncommented
                .lines()
                .any(|l| l.starts_with(&format!("{key} = "))),
            "config/entra-redis-proxy.toml lacks `{key}`"
        );
    }
    for ((key, default), (_, shown)) in defaults.into_iter().zip(example_values) {
        if key != "upstream" && !default.is_null() {
            assert_eq!(shown, default, "example default of `{key}`");
        }
    }
}

#[test]
fn docs_list_every_key_flag_and_variable() {
    let docs = include_str!("../../../docs/configuration.md");
    for key in all_keys() {
        let row = format!("| `{key}` | `--{}", key.replace('_', "-"));
        assert!(
            docs.contains(&row),
            "docs/configuration.md lacks a row for `{key}`"
        );
        assert!(docs.contains(&format!("`{}`", env_var_name(&key))), "{key}");
    }
}

#[test]
fn every_key_has_a_flag() {
    use clap::CommandFactory;
    let cmd = Cli::command();
    for key in all_keys() {
        let flag = key.replace('_', "-");
        assert!(
            cmd.get_arguments()
                .any(|a| a.get_long() == Some(flag.as_str())),
            "no --{flag}"
        );
    }
}

#[test]
fn docs_list_every_key_an_upstreams_entry_may_set() {
    let docs = include_str!("../../../docs/configuration.md");
    let section = docs
        .split("## Several caches: `[[upstreams]]`")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/configuration.md has the [[upstreams]] section");
    for key in UPSTREAM_KEYS {
        assert!(
            section.contains(&format!("`{key}`")),
            "the [[upstreams]] section of docs/configuration.md does not name `{key}`"
        );
    }
}

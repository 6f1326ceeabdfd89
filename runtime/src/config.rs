//! Configuration file checking shared by every binary: parse TOML text into a config type and
//! report *every* problem at once (syntax, unknown keys, wrong types, invalid values) instead
//! of stopping at the first, as serde alone would. [`parse`] is a pure function over text;
//! [`load`] adds the file and the process environment, for the binaries' `main`.
//!
//! Convention for config types: every field has a default (`Default` plus `#[serde(default)]`)
//! and is of the type the program uses (`SocketAddr`, `Duration` through [`duration`], enums,
//! numbers), so that a value is parsed once, here, and a bad one is a start-up error naming its
//! key, never a silent default further on. None is a bare `Option` (the serialized default must
//! name every key a file may use): "unset" is spelled as an empty string
//! ([`optional_address`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Exit status for a configuration error (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Looks up an environment variable; a function so that tests need not touch the process
/// environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// An environment with no variables set.
pub fn no_env(_: &str) -> Option<String> {
    None
}

/// A config type that can take environment overrides and check its own values.
pub trait Validate {
    /// Applies overrides from the environment (secrets and service URLs only). The default
    /// applies none.
    fn apply_env(&mut self, _env: Env<'_>) {}

    /// Every problem with the values, as `key: problem` sentences. Empty when valid.
    fn validate(&self) -> Vec<String>;
}

/// Parses a config file's text (empty text gives the defaults), applies the environment
/// overrides and validates; on failure returns every problem found.
pub fn parse<T>(text: &str, env: Env<'_>) -> Result<T, Vec<String>>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        vec![format!("syntax: {}", e.message().trim())]
            .into_iter()
            .map(|m| match e.span() {
                Some(span) => format!("{m} (at byte {})", span.start),
                None => m,
            })
            .collect::<Vec<_>>()
    })?;
    let defaults = match toml::Table::try_from(T::default()) {
        Ok(t) => t,
        Err(e) => return Err(vec![format!("internal: default config does not serialize: {e}")]),
    };
    let mut errors = Vec::new();
    check_table(&mut table, &defaults, "", &mut errors);
    check_values::<T>(&mut table, &defaults, &mut errors);
    // Offending keys were removed above, so this only fails on problems serde alone can see
    // (a value out of an integer type's range, an unknown enum word).
    let mut config: T = match T::deserialize(toml::Value::Table(table)) {
        Ok(c) => c,
        Err(e) => {
            errors.push(e.message().trim().to_owned());
            return Err(errors);
        }
    };
    config.apply_env(env);
    errors.extend(config.validate());
    if errors.is_empty() { Ok(config) } else { Err(errors) }
}

/// Reads the config file (none: the documented defaults), applies the process environment's
/// overrides and checks it; on failure prints every problem to stderr, prefixed by the
/// binary's name, and returns [`EXIT_CONFIG`] for `main` to exit with.
pub fn load<T>(binary: &str, path: Option<&std::path::Path>) -> Result<T, std::process::ExitCode>
where
    T: DeserializeOwned + Serialize + Default + Validate,
{
    let text = match path {
        None => Ok(String::new()),
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read the file: {e}")])
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    text.and_then(|text| parse::<T>(&text, &env)).map_err(|errors| {
        let from = path
            .map_or_else(|| "(defaults and environment)".to_owned(), |p| p.display().to_string());
        eprintln!("{binary}: invalid configuration {from}:");
        for e in errors {
            eprintln!("  - {e}");
        }
        exit_config()
    })
}

/// [`EXIT_CONFIG`] as an exit code.
pub fn exit_config() -> std::process::ExitCode {
    std::process::ExitCode::from(EXIT_CONFIG as u8)
}

/// Renders a config as TOML (for `print-default-config` tests and diagnostics).
pub fn to_toml<T: Serialize>(config: &T) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

/// Reports keys that `defaults` does not have and values whose TOML type differs from the
/// default's, and removes them from `table` so that the rest can still be deserialized.
fn check_table(
    table: &mut toml::Table,
    defaults: &toml::Table,
    path: &str,
    errors: &mut Vec<String>,
) {
    let mut bad = Vec::new();
    for (key, value) in table.iter_mut() {
        let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let Some(default) = defaults.get(key) else {
            errors.push(format!("{full}: unknown key"));
            bad.push(key.clone());
            continue;
        };
        match (value, default) {
            (toml::Value::Table(inner), toml::Value::Table(inner_default)) => {
                check_table(inner, inner_default, &full, errors);
            }
            (toml::Value::Array(items), toml::Value::Array(default_items)) => {
                if let Some(toml::Value::Table(item_default)) = default_items.first() {
                    for (i, item) in items.iter_mut().enumerate() {
                        if let toml::Value::Table(item) = item {
                            check_table(item, item_default, &format!("{full}[{i}]"), errors);
                        }
                    }
                }
            }
            (toml::Value::Integer(_), toml::Value::Float(_)) => {}
            (value, default) if value.type_str() != default.type_str() => {
                errors.push(format!(
                    "{full}: expected {}, found {}",
                    default.type_str(),
                    value.type_str()
                ));
                bad.push(key.clone());
            }
            _ => {}
        }
    }
    for key in bad {
        table.remove(&key);
    }
}

/// Tries each value of `table` alone, put into the defaults, through the config type's own
/// deserialization: values of the right TOML type that the type still refuses (an address, a
/// duration, an enum word) are reported with their key, every one of them, and removed so
/// that the rest can be deserialized.
fn check_values<T: DeserializeOwned>(
    table: &mut toml::Table,
    defaults: &toml::Table,
    errors: &mut Vec<String>,
) {
    let mut leaves = Vec::new();
    collect_leaves(table, &mut Vec::new(), &mut leaves);
    for (path, value) in leaves {
        let mut probe = defaults.clone();
        set_leaf(&mut probe, &path, value);
        if let Err(e) = T::deserialize(toml::Value::Table(probe)) {
            errors.push(format!("{}: {}", path.join("."), e.message().trim()));
            remove_leaf(table, &path);
        }
    }
}

/// Every non-table value of `table` with its path (an array is one value).
fn collect_leaves(
    table: &toml::Table,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, toml::Value)>,
) {
    for (key, value) in table {
        path.push(key.clone());
        match value {
            toml::Value::Table(inner) => collect_leaves(inner, path, out),
            other => out.push((path.clone(), other.clone())),
        }
        path.pop();
    }
}

fn set_leaf(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut at = table;
    for key in parents {
        let slot = at.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(inner) = slot else { return };
        at = inner;
    }
    at.insert(last.clone(), value);
}

fn remove_leaf(table: &mut toml::Table, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut at = table;
    for key in parents {
        let Some(toml::Value::Table(inner)) = at.get_mut(key) else { return };
        at = inner;
    }
    at.remove(last);
}

/// Parses a duration written as a whole number and a unit: `500ms`, `30s`, `5m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).map(std::time::Duration::from_millis)
}

/// `#[serde(with = "runtime::config::duration")]`: a [`std::time::Duration`] in a config file,
/// written as [`parse_duration`] reads it and refused when it does not.
pub mod duration {
    use std::time::Duration;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    /// The largest unit that writes `d` exactly.
    pub fn format(d: Duration) -> String {
        let ms = d.as_millis();
        for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms > 0 && ms.is_multiple_of(size) {
                return format!("{}{unit}", ms / size);
            }
        }
        format!("{ms}ms")
    }

    /// Writes the duration.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Reads the duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).ok_or_else(|| {
            D::Error::custom(format!("`{text}` is not a duration like 500ms, 30s or 5m"))
        })
    }
}

/// `#[serde(with = "runtime::config::optional_address")]`: an `address:port` that may be left
/// empty (`""`, the default: the program chooses).
pub mod optional_address {
    use std::net::SocketAddr;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the address, or `""`.
    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.map(|a| a.to_string()).unwrap_or_default())
    }

    /// Reads the address; `""` is none.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("`{text}` is not an address:port (or empty)")))
    }
}

/// `#[serde(with = "runtime::config::address")]`: an `address:port`, with a message that
/// says so when it is not one.
pub mod address {
    use std::net::SocketAddr;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the address.
    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }

    /// Reads the address.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| D::Error::custom(format!("`{text}` is not an address:port")))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        listen: String,
        limit: u32,
        #[serde(with = "duration")]
        every: std::time::Duration,
        #[serde(with = "optional_address")]
        bind: Option<std::net::SocketAddr>,
        inner: Inner,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        rate: f64,
        name: String,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                listen: "127.0.0.1:1".into(),
                limit: 5,
                every: std::time::Duration::from_secs(90),
                bind: None,
                inner: Inner::default(),
            }
        }
    }

    impl Default for Inner {
        fn default() -> Self {
            Self { rate: 1.5, name: "x".into() }
        }
    }

    impl Validate for Sample {
        fn validate(&self) -> Vec<String> {
            let mut errors = Vec::new();
            if self.listen.parse::<std::net::SocketAddr>().is_err() {
                errors.push(format!("listen: `{}` is not an address:port", self.listen));
            }
            if self.limit == 0 {
                errors.push("limit: must be at least 1".to_owned());
            }
            errors
        }
    }

    #[test]
    fn empty_text_gives_defaults() {
        assert_eq!(parse::<Sample>("", &no_env).unwrap(), Sample::default());
    }

    #[test]
    fn integer_is_accepted_for_float() {
        let s: Sample = parse("[inner]\nrate = 2\n", &no_env).unwrap();
        assert_eq!(s.inner.rate, 2.0);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "listen = \"nowhere\"\nlimit = 0\nbogus = 1\n[inner]\nname = 3\nextra = true\n";
        let errors = parse::<Sample>(text, &no_env).unwrap_err();
        assert_eq!(
            errors,
            vec![
                "bogus: unknown key",
                "inner.extra: unknown key",
                "inner.name: expected string, found integer",
                "listen: `nowhere` is not an address:port",
                "limit: must be at least 1",
            ]
        );
    }

    #[test]
    fn typed_values_are_parsed_once_and_every_bad_one_is_named() {
        let s: Sample = parse("every = \"500ms\"\nbind = \"10.0.0.1:80\"\n", &no_env).unwrap();
        assert_eq!(s.every, std::time::Duration::from_millis(500));
        assert_eq!(s.bind, Some("10.0.0.1:80".parse().unwrap()));
        let errors =
            parse::<Sample>("every = \"soon\"\nbind = \"here\"\nlimit = 0\n", &no_env).unwrap_err();
        assert_eq!(
            errors,
            vec![
                "bind: `here` is not an address:port (or empty)",
                "every: `soon` is not a duration like 500ms, 30s or 5m",
                "limit: must be at least 1",
            ]
        );
    }

    #[test]
    fn durations_print_as_they_are_written() {
        for text in ["500ms", "30s", "5m", "2h", "1d", "90s", "1500ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(duration::format(d), text);
        }
        assert_eq!(parse_duration("5 m"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }

    #[test]
    fn syntax_error_names_the_place() {
        let errors = parse::<Sample>("limit = = 3", &no_env).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("syntax:"), "{errors:?}");
        assert!(errors[0].contains("at byte"), "{errors:?}");
    }

    #[test]
    fn out_of_range_integer_is_an_error() {
        let errors = parse::<Sample>("limit = -1", &no_env).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}

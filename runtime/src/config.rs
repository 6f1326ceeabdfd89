//! Configuration file checking shared by every binary: parse TOML text into a config type and
//! report *every* problem at once (syntax, unknown keys, wrong types, invalid values) instead
//! of stopping at the first, as serde alone would. [`parse`] is a pure function over text;
//! [`load`] adds the file and the process environment, for the binaries' `main`.
//!
//! Convention for config types: every field has a default (`Default` plus `#[serde(default)]`)
//! and none is an `Option`, so that the serialized default names every key a file may use.
//! "Unset" is spelled as an empty string.

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

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        listen: String,
        limit: u32,
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
            Self { listen: "127.0.0.1:1".into(), limit: 5, inner: Inner::default() }
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

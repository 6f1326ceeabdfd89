//! The dashboard's configuration. [`DEFAULT_TOML`] is what `print-default-config` prints; a
//! test keeps it equal to [`Config::default`].

use std::net::SocketAddr;

use runtime::config::{Env, Validate};
use serde::{Deserialize, Serialize};

/// The documented defaults, as printed by `print-default-config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The dashboard's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the UI is served.
    #[serde(with = "runtime::config::address")]
    pub listen: SocketAddr,
    /// The aggregator's public API.
    pub api_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            api_url: "http://auditflow-aggregator:8000".into(),
        }
    }
}

impl Validate for Config {
    /// `AUDITFLOW_API_URL`.
    fn apply_env(&mut self, env: Env<'_>) {
        if let Some(v) = env("AUDITFLOW_API_URL") {
            self.api_url = v;
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        // Plain HTTP: the dashboard reaches the aggregator inside the cluster; TLS for
        // browsers belongs at the ingress in front of the dashboard.
        if !self.api_url.starts_with("http://") {
            errors.push(format!("api_url: `{}` is not an http:// URL", self.api_url));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use runtime::config::{no_env, parse};

    use super::*;

    #[test]
    fn documented_defaults_equal_the_built_in_ones() {
        let parsed: Config = parse(DEFAULT_TOML, &no_env).expect("default.toml is valid");
        assert_eq!(parsed, Config::default());
    }
}

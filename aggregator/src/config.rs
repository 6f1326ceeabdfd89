//! The aggregator's configuration. [`DEFAULT_TOML`] is what `print-default-config` prints; a
//! test keeps it equal to [`Config::default`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use wire::config::{Env, Validate};

/// The documented defaults, as printed by `print-default-config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The aggregator's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Embedded mode's data directory.
    pub data_dir: String,
    /// Rule files.
    pub rules_dir: String,
    /// Listeners.
    pub http: HttpConfig,
    /// External services; all empty means embedded mode.
    pub services: ServicesConfig,
}

/// `[http]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// API, webhooks, SSE.
    pub listen: String,
    /// Prometheus metrics.
    pub metrics_listen: String,
}

/// `[services]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServicesConfig {
    /// RabbitMQ.
    pub amqp_url: String,
    /// PostgreSQL.
    pub database_url: String,
    /// Redis.
    pub redis_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: "./auditflow-data".into(),
            rules_dir: "rules".into(),
            http: HttpConfig::default(),
            services: ServicesConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: "0.0.0.0:8000".into(), metrics_listen: "0.0.0.0:9102".into() }
    }
}

impl Config {
    /// True when no external service is configured: everything runs in-process.
    pub fn is_embedded(&self) -> bool {
        let s = &self.services;
        s.amqp_url.is_empty() && s.database_url.is_empty() && s.redis_url.is_empty()
    }
}

impl Validate for Config {
    /// `AMQP_URL`, `DATABASE_URL`, `REDIS_URL`.
    fn apply_env(&mut self, env: Env<'_>) {
        let s = &mut self.services;
        for (name, slot) in [
            ("AMQP_URL", &mut s.amqp_url),
            ("DATABASE_URL", &mut s.database_url),
            ("REDIS_URL", &mut s.redis_url),
        ] {
            if let Some(v) = env(name) {
                *slot = v;
            }
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (key, value) in
            [("http.listen", &self.http.listen), ("http.metrics_listen", &self.http.metrics_listen)]
        {
            if value.parse::<SocketAddr>().is_err() {
                errors.push(format!("{key}: `{value}` is not an address:port"));
            }
        }
        if self.data_dir.is_empty() {
            errors.push("data_dir: must not be empty".into());
        }
        let s = &self.services;
        let checks: [(&str, &str, &[&str]); 3] = [
            ("services.amqp_url", &s.amqp_url, &["amqp://", "amqps://"]),
            ("services.database_url", &s.database_url, &["postgres://", "postgresql://"]),
            ("services.redis_url", &s.redis_url, &["redis://", "rediss://"]),
        ];
        for (key, value, schemes) in checks {
            if !value.is_empty() && !schemes.iter().any(|p| value.starts_with(p)) {
                errors.push(format!("{key}: must start with {}", schemes.join(" or ")));
            }
        }
        if !self.is_embedded() && checks.iter().any(|(_, v, _)| v.is_empty()) {
            errors.push(
                "services: set all of amqp_url, database_url and redis_url (cluster profile) or \
                 none (embedded)"
                    .into(),
            );
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use wire::config::{no_env, parse};

    use super::*;

    #[test]
    fn documented_defaults_equal_the_built_in_ones() {
        let parsed: Config = parse(DEFAULT_TOML, &no_env).expect("default.toml is valid");
        assert_eq!(parsed, Config::default());
        assert!(parsed.is_embedded());
    }

    #[test]
    fn partial_cluster_profile_is_refused() {
        let env = |k: &str| (k == "REDIS_URL").then(|| "redis://r".to_owned());
        let errors = parse::<Config>("", &env).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}

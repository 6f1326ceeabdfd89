//! The broker's configuration. [`DEFAULT_TOML`] is what `print-default-config` prints; a test
//! keeps it equal to [`Config::default`].

use std::net::SocketAddr;

use runtime::config::{Env, Validate};
use serde::{Deserialize, Serialize};

/// The documented defaults, as printed by `print-default-config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The broker's configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The MQTT side.
    pub mqtt: MqttConfig,
    /// Health and metrics endpoint.
    pub http: HttpConfig,
    /// The RabbitMQ side.
    pub amqp: AmqpConfig,
}

/// `[mqtt]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Listener address.
    #[serde(with = "runtime::config::address")]
    pub listen: SocketAddr,
    /// TLS certificate (PEM); empty for plain MQTT.
    pub tls_cert: String,
    /// TLS key (PEM); empty for plain MQTT.
    pub tls_key: String,
    /// File of `node:password` lines.
    pub credentials_file: String,
    /// Largest accepted publish.
    pub max_payload_bytes: u32,
    /// Most clients at once.
    pub max_connections: u32,
    /// Most unacknowledged publishes per connection.
    pub max_inflight: u16,
    /// Kubernetes service-account tokens as agents' credentials.
    pub kubernetes: KubernetesAuth,
}

/// `[mqtt.kubernetes]`: agents in the cluster present a projected service-account token
/// (audience [`KubernetesAuth::audience`]) as their password; see `kubetoken.rs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesAuth {
    /// The cluster's JSON Web Key Set (`kubectl get --raw /openid/v1/jwks`); empty: off.
    pub jwks_file: String,
    /// The cluster's service-account issuer (the tokens' `iss`).
    pub issuer: String,
    /// The audience the agents' tokens are projected for.
    pub audience: String,
    /// The service accounts agents run as (`system:serviceaccount:<namespace>:<name>`).
    pub service_accounts: Vec<String>,
}

impl Default for KubernetesAuth {
    fn default() -> Self {
        Self {
            jwks_file: String::new(),
            issuer: String::new(),
            audience: "auditflow-broker".into(),
            service_accounts: vec!["system:serviceaccount:auditflow:auditflow-agent".into()],
        }
    }
}

impl KubernetesAuth {
    /// The policy, when token authentication is on.
    pub fn policy(&self) -> Option<crate::kubetoken::TokenPolicy> {
        (!self.jwks_file.is_empty()).then(|| crate::kubetoken::TokenPolicy {
            jwks_file: self.jwks_file.clone().into(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            service_accounts: self.service_accounts.clone(),
        })
    }
}

/// `[http]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[serde(with = "runtime::config::address")]
    pub listen: SocketAddr,
}

/// `[amqp]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// RabbitMQ URL.
    pub url: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            tls_cert: String::new(),
            tls_key: String::new(),
            credentials_file: String::new(),
            max_payload_bytes: 1 << 20,
            max_connections: 256,
            max_inflight: 100,
            kubernetes: KubernetesAuth::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([0, 0, 0, 0], 9101)) }
    }
}

impl Validate for Config {
    /// `AMQP_URL`.
    fn apply_env(&mut self, env: Env<'_>) {
        if let Some(v) = env("AMQP_URL") {
            self.amqp.url = v;
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.mqtt.tls_cert.is_empty() != self.mqtt.tls_key.is_empty() {
            errors.push("mqtt.tls_cert, mqtt.tls_key: set both or neither".into());
        }
        if self.mqtt.max_payload_bytes < 1024 {
            errors.push("mqtt.max_payload_bytes: must be at least 1024".into());
        }
        if self.mqtt.max_connections == 0 {
            errors.push("mqtt.max_connections: must be at least 1".into());
        }
        if self.mqtt.max_inflight == 0 {
            errors.push("mqtt.max_inflight: must be at least 1".into());
        }
        if !self.mqtt.credentials_file.is_empty() {
            let path = std::path::Path::new(&self.mqtt.credentials_file);
            if let Err(problems) = crate::credentials::Credentials::load(path) {
                errors.extend(problems.into_iter().map(|p| format!("mqtt.credentials_file: {p}")));
            }
        }
        let k = &self.mqtt.kubernetes;
        if !k.jwks_file.is_empty() {
            if k.issuer.is_empty() {
                errors.push("mqtt.kubernetes.issuer: required with jwks_file (the cluster's service-account issuer)".into());
            }
            if k.audience.is_empty() {
                errors.push("mqtt.kubernetes.audience: required with jwks_file".into());
            }
            if k.service_accounts.is_empty()
                || k.service_accounts.iter().any(|sa| !sa.starts_with("system:serviceaccount:"))
            {
                errors.push("mqtt.kubernetes.service_accounts: one or more `system:serviceaccount:<namespace>:<name>`".into());
            }
            if let Some(Err(e)) = k.policy().map(crate::kubetoken::TokenVerifier::new) {
                errors.push(format!("mqtt.kubernetes.jwks_file: {e}"));
            }
        }
        if !(self.amqp.url.starts_with("amqp://") || self.amqp.url.starts_with("amqps://")) {
            errors.push("amqp.url: must start with amqp:// or amqps:// (or set AMQP_URL)".into());
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
        let env = |k: &str| (k == "AMQP_URL").then(|| "amqp://x".to_owned());
        let parsed: Config = parse(DEFAULT_TOML, &env).expect("default.toml is valid");
        let mut expected = Config::default();
        expected.amqp.url = "amqp://x".into();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn missing_amqp_url_is_reported() {
        let errors = parse::<Config>("", &no_env).unwrap_err();
        assert_eq!(errors, vec!["amqp.url: must start with amqp:// or amqps:// (or set AMQP_URL)"]);
    }
}

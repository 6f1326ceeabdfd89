//! Kubernetes projected service-account tokens as MQTT passwords: the DaemonSet's credential
//! (design.md §4.3, docs/security.md).
//!
//! The kubelet writes each agent pod a token signed by the cluster's service-account issuer,
//! with the broker as its audience, and (Kubernetes 1.30 and later) the name of the node the
//! pod runs on in the claim `kubernetes.io.node.name`. The kubelet, not the pod, chooses that
//! claim, so a compromised node can present only tokens for itself: it cannot obtain a token
//! naming another node without the API server's signing key. The broker checks the token
//! offline against the issuer's public keys (the cluster's JWKS, `/openid/v1/jwks`, mounted as
//! a file that `k8s/create-secrets.sh` fills): signature, issuer, audience, expiry, the
//! service account, and that the node claim equals the MQTT client id and username.
//!
//! The key set is re-read when its file changes (a ConfigMap updated in place), so a rotated
//! signing key needs no restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Clock skew tolerated on `exp` and `nbf`, seconds.
const LEEWAY_SECS: u64 = 60;

/// Signature algorithms a service-account issuer uses: RSA (the default signing key) and ECDSA.
/// Never `none` or HMAC: a token must be signed by a key only the API server holds.
const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// What a token must say to be let in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
    /// The cluster's JSON Web Key Set file.
    pub jwks_file: PathBuf,
    /// The token's `iss`: the cluster's service-account issuer.
    pub issuer: String,
    /// The token's `aud` must include this.
    pub audience: String,
    /// `sub` must be one of these (`system:serviceaccount:<namespace>:<name>`).
    pub service_accounts: Vec<String>,
}

/// Why a token was refused (logged, and the label of the refusal counter's `reason`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a JWT, or a header or claims that do not parse.
    #[error("not a service-account token: {0}")]
    Malformed(String),
    /// The key set cannot be read.
    #[error("the cluster's key set is unusable: {0}")]
    KeySet(String),
    /// No key in the set has the token's `kid`, or the algorithm is not allowed.
    #[error("signed by no key of the cluster's key set")]
    UnknownKey,
    /// Signature, issuer, audience, expiry or not-before failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Another service account's token.
    #[error("token of service account `{0}`, not an agent's")]
    ServiceAccount(String),
    /// No `kubernetes.io.node.name` claim (a cluster older than 1.30, or the feature off).
    #[error("the token names no node (Kubernetes 1.30 or later binds tokens to nodes)")]
    NoNode,
    /// The token is for another node than the client id and username claim.
    #[error("token of node `{token}`, presented as `{claimed}`")]
    WrongNode {
        /// The node in the token.
        token: String,
        /// The client id the connection claimed.
        claimed: String,
    },
}

impl Refusal {
    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "token_malformed",
            Self::KeySet(_) => "token_keyset",
            Self::UnknownKey => "token_unknown_key",
            Self::Invalid(_) => "token_invalid",
            Self::ServiceAccount(_) => "token_service_account",
            Self::NoNode | Self::WrongNode { .. } => "token_node",
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Deserialize)]
struct KubernetesClaims {
    node: Option<NamedRef>,
}

#[derive(Deserialize)]
struct NamedRef {
    name: String,
}

/// Verifies agents' tokens against the cluster's key set.
#[derive(Debug)]
pub struct TokenVerifier {
    policy: TokenPolicy,
    /// The key set and the modification time of the file it was read from.
    keys: Mutex<Option<(SystemTime, JwkSet)>>,
}

impl TokenVerifier {
    /// A verifier for `policy`; fails when the key set cannot be read or holds no key, so that
    /// a bad ConfigMap is an error at start rather than a refusal of every agent.
    pub fn new(policy: TokenPolicy) -> Result<Self, Refusal> {
        let verifier = Self { policy, keys: Mutex::new(None) };
        let keys = verifier.current_keys()?;
        if keys.keys.is_empty() {
            return Err(Refusal::KeySet(format!(
                "{} holds no key",
                verifier.policy.jwks_file.display()
            )));
        }
        Ok(verifier)
    }

    /// True when `password` looks like a JWT (three base64url parts, the header a JSON
    /// object): such a password is checked as a token, anything else as a node password.
    pub fn is_token(password: &str) -> bool {
        password.starts_with("eyJ") && password.bytes().filter(|&b| b == b'.').count() == 2
    }

    /// Checks `token` for the node that connects with client id and username `node`.
    pub fn verify(&self, node: &str, token: &str) -> Result<(), Refusal> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(Refusal::UnknownKey);
        }
        let keys = self.current_keys()?;
        let jwk = select_key(&keys, header.kid.as_deref()).ok_or(Refusal::UnknownKey)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| Refusal::KeySet(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.policy.issuer]);
        validation.set_audience(&[&self.policy.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => Refusal::UnknownKey,
            jsonwebtoken::errors::ErrorKind::Json(_)
            | jsonwebtoken::errors::ErrorKind::Base64(_)
            | jsonwebtoken::errors::ErrorKind::Utf8(_)
            | jsonwebtoken::errors::ErrorKind::InvalidToken => Refusal::Malformed(e.to_string()),
            _ => Refusal::Invalid(e.to_string()),
        })?;
        let claims = data.claims;
        if !self.policy.service_accounts.contains(&claims.sub) {
            return Err(Refusal::ServiceAccount(claims.sub));
        }
        let token_node =
            claims.kubernetes.and_then(|k| k.node).map(|n| n.name).ok_or(Refusal::NoNode)?;
        if token_node != node {
            return Err(Refusal::WrongNode { token: token_node, claimed: node.to_owned() });
        }
        Ok(())
    }

    /// The key set, re-read when the file's modification time changed. A file that became
    /// unreadable or invalid keeps the last good set in use (and is logged): a broken update of
    /// the ConfigMap must not lock every agent out.
    fn current_keys(&self) -> Result<JwkSet, Refusal> {
        let path = &self.policy.jwks_file;
        let mut cached = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| Refusal::KeySet(format!("{}: {e}", path.display())));
        if let (Ok(modified), Some((seen, keys))) = (&modified, cached.as_ref())
            && modified == seen
        {
            return Ok(keys.clone());
        }
        match modified.and_then(|m| read_key_set(path).map(|keys| (m, keys))) {
            Ok((modified, keys)) => {
                *cached = Some((modified, keys.clone()));
                Ok(keys)
            }
            Err(e) => match cached.as_ref() {
                Some((_, keys)) => {
                    tracing::warn!(error = %e, "keeping the previous key set");
                    Ok(keys.clone())
                }
                None => Err(e),
            },
        }
    }
}

/// Reads and parses a JWKS file.
fn read_key_set(path: &Path) -> Result<JwkSet, Refusal> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Refusal::KeySet(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Refusal::KeySet(format!("{}: not a JSON Web Key Set: {e}", path.display())))
}

/// The key with `kid`; with no `kid` in the token, the set's only key.
fn select_key<'a>(keys: &'a JwkSet, kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
}

//! Per-node MQTT credentials: a file of `node:secret` lines (a mounted Secret). The username
//! must be the node name and the MQTT client id must equal it, so that a node can only
//! connect as itself.
//!
//! The secret is the password itself or, better, `sha256:<64 hex digits>`, the SHA-256 of the
//! password: then the file gives away no node's password (whoever reads the broker's Secret
//! cannot log in as a node), and a node can make its own password and hand out only the hash
//! (the Pi image's first boot does). A plain hash suffices, no slow password hash: the
//! passwords are random and long (at least [`MIN_PASSWORD_BYTES`] bytes), not guessable.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The shortest password a file may hold, like the API's shortest token: a short secret is a
/// guessable one.
pub const MIN_PASSWORD_BYTES: usize = 16;

/// What the file holds for one node.
#[derive(Clone)]
enum Secret {
    Plain(Vec<u8>),
    Sha256([u8; 32]),
}

/// Node name → secret.
#[derive(Clone, Default)]
pub struct Credentials(HashMap<String, Secret>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print passwords.
        write!(f, "Credentials({} nodes)", self.0.len())
    }
}

/// `sha256:<64 hex>` → the digest.
fn parse_sha256(secret: &str) -> Option<Result<[u8; 32], ()>> {
    let hex = secret.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(Err(()));
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| ()).ok()?;
    }
    Some(Ok(out))
}

/// The line to put in a broker's credentials file for `node` with `password`: the hashed
/// form, so the file does not hold the password.
pub fn hashed_line(node: &str, password: &str) -> String {
    let digest = Sha256::digest(password.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{node}:sha256:{hex}")
}

/// Equal in constant time (for equal lengths; the length itself is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (x, y) in a.iter().zip(b.iter().cycle()) {
        diff |= usize::from(x ^ y);
    }
    diff == 0 && !b.is_empty()
}

impl Credentials {
    /// Parses `node:password` and `node:sha256:<hex>` lines; blank lines and `#` comments are
    /// skipped. Every bad line is reported (by number; never with its secret).
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let mut map = HashMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((node, secret)) =
                line.split_once(':').filter(|(n, s)| !n.is_empty() && !s.is_empty())
            else {
                errors.push(format!("line {n}: expected `node:password` or `node:sha256:<hex>`"));
                continue;
            };
            if node.contains(['/', '+', '#']) {
                errors.push(format!("line {n}: node name `{node}` contains / + or #"));
                continue;
            }
            let secret = match parse_sha256(secret) {
                Some(Ok(digest)) => Secret::Sha256(digest),
                Some(Err(())) => {
                    errors.push(format!("line {n}: `sha256:` must be followed by 64 hex digits"));
                    continue;
                }
                None if secret.len() < MIN_PASSWORD_BYTES => {
                    errors.push(format!(
                        "line {n}: the password of `{node}` is shorter than {MIN_PASSWORD_BYTES} bytes"
                    ));
                    continue;
                }
                None => Secret::Plain(secret.as_bytes().to_vec()),
            };
            if map.insert(node.to_owned(), secret).is_some() {
                errors.push(format!("line {n}: node `{node}` appears twice"));
            }
        }
        if errors.is_empty() { Ok(Self(map)) } else { Err(errors) }
    }

    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        Self::parse(&text)
    }

    /// True when `client_id` = `username` and the password matches, compared in constant time.
    pub fn allows(&self, client_id: &str, username: &str, password: &str) -> bool {
        if client_id != username || password.is_empty() {
            return false;
        }
        match self.0.get(username) {
            Some(Secret::Plain(expected)) => same(expected, password.as_bytes()),
            Some(Secret::Sha256(expected)) => {
                same(expected, Sha256::digest(password.as_bytes()).as_slice())
            }
            None => false,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no node may connect.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let c = Credentials::parse(
            "# fleet\npi-1:s3cret-0123456789ab\n\npi-2:other:with:colons:0123\n",
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.allows("pi-1", "pi-1", "s3cret-0123456789ab"));
        assert!(c.allows("pi-2", "pi-2", "other:with:colons:0123"));
        assert!(!c.allows("pi-1", "pi-1", "s3cret-0123456789a"));
        assert!(!c.allows("pi-1", "pi-1", "s3cret-0123456789abX"));
        assert!(!c.allows("pi-1", "pi-1", ""));
        assert!(!c.allows("pi-2", "pi-1", "s3cret-0123456789ab"), "client id must be the node");
        assert!(!c.allows("pi-3", "pi-3", "s3cret-0123456789ab"));
        assert_eq!(format!("{c:?}"), "Credentials(2 nodes)");
    }

    #[test]
    fn hashed_entries_hold_no_password() {
        let line = hashed_line("pi-7", "a-long-random-password-0123");
        assert!(!line.contains("a-long-random"));
        // echo -n a-long-random-password-0123 | sha256sum
        assert_eq!(line.len(), "pi-7:sha256:".len() + 64);
        let c = Credentials::parse(&line.to_uppercase().replacen("PI-7:SHA256", "pi-7:sha256", 1))
            .unwrap();
        assert!(c.allows("pi-7", "pi-7", "a-long-random-password-0123"), "hex in either case");
        assert!(!c.allows("pi-7", "pi-7", "a-long-random-password-0124"));
        assert!(!c.allows("pi-7", "pi-7", &line[5..]), "the hash is not the password");
    }

    #[test]
    fn every_bad_line_is_reported() {
        let errors = Credentials::parse(
            "nopass\npi-1:0123456789abcdef\npi-1:0123456789abcdef\n:x\nbad/node:y\n\
             pi-2:short\npi-3:sha256:abc\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors.iter().all(|e| !e.contains("0123456789abcdef")), "a secret in {errors:?}");
    }
}

//! Per-node MQTT credentials: a file of `node:password` lines (a mounted Secret). The
//! username must be the node name and the MQTT client id must equal it, so that a node can
//! only connect as itself.

use std::collections::HashMap;
use std::path::Path;

/// Node name → password.
#[derive(Clone, Default)]
pub struct Credentials(HashMap<String, String>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print passwords.
        write!(f, "Credentials({} nodes)", self.0.len())
    }
}

impl Credentials {
    /// Parses `node:password` lines; blank lines and `#` comments are skipped. Every bad line
    /// is reported.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let mut map = HashMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((node, password)) if !node.is_empty() && !password.is_empty() => {
                    if node.contains(['/', '+', '#']) {
                        errors
                            .push(format!("line {}: node name `{node}` contains / + or #", i + 1));
                    } else if map.insert(node.to_owned(), password.to_owned()).is_some() {
                        errors.push(format!("line {}: node `{node}` appears twice", i + 1));
                    }
                }
                _ => errors.push(format!("line {}: expected `node:password`", i + 1)),
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
        if client_id != username {
            return false;
        }
        let Some(expected) = self.0.get(username) else { return false };
        let (a, b) = (expected.as_bytes(), password.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (x, y) in a.iter().zip(b.iter().cycle()) {
            diff |= usize::from(x ^ y);
        }
        diff == 0 && !b.is_empty()
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
        let c = Credentials::parse("# fleet\npi-1:s3cret\n\npi-2:other:with:colons\n").unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.allows("pi-1", "pi-1", "s3cret"));
        assert!(c.allows("pi-2", "pi-2", "other:with:colons"));
        assert!(!c.allows("pi-1", "pi-1", "s3cre"));
        assert!(!c.allows("pi-1", "pi-1", "s3cretX"));
        assert!(!c.allows("pi-1", "pi-1", ""));
        assert!(!c.allows("pi-2", "pi-1", "s3cret"), "client id must be the node");
        assert!(!c.allows("pi-3", "pi-3", "s3cret"));
        assert_eq!(format!("{c:?}"), "Credentials(2 nodes)");
    }

    #[test]
    fn every_bad_line_is_reported() {
        let errors = Credentials::parse("nopass\npi-1:a\npi-1:b\n:x\nbad/node:y\n").unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
    }
}

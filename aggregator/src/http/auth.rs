//! Bearer tokens and roles (design.md §6). Tokens come from `AUDITFLOW_API_TOKENS` or the file
//! `api.tokens_file`, as `name:token:role` entries separated by commas or new lines; roles
//! are viewer < operator < admin.

use std::fmt;

use serde::Serialize;

/// What a token may do. Ordered: a higher role may do everything a lower one may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Also acknowledge, resolve, reopen, silence and submit events.
    Operator,
    /// Also reload rules.
    Admin,
}

impl Role {
    /// The name used in token lists and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The token's name (recorded as the actor of lifecycle changes).
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, Principal)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(_, p)| p.name.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

/// Shortest token accepted: 16 characters (a generated token has 43).
pub const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    /// Parses `name:token:role` entries; every problem is reported (without the token).
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let mut entries: Vec<(Vec<u8>, Principal)> = Vec::new();
        let mut errors = Vec::new();
        for (i, entry) in text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'))
            .enumerate()
        {
            let n = i + 1;
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(token), Some(role)) = (parts.next(), parts.next(), parts.next())
            else {
                errors.push(format!("token entry {n}: expected name:token:role"));
                continue;
            };
            let Some(role) = Role::parse(role.trim()) else {
                errors.push(format!(
                    "token entry {n} ({name}): role must be viewer, operator or admin"
                ));
                continue;
            };
            if name.is_empty() {
                errors.push(format!("token entry {n}: empty name"));
            } else if token.len() < MIN_TOKEN_LEN {
                errors.push(format!(
                    "token entry {n} ({name}): token shorter than {MIN_TOKEN_LEN} characters"
                ));
            } else if entries.iter().any(|(_, p)| p.name == name) {
                errors.push(format!("token entry {n}: name `{name}` used twice"));
            } else if entries.iter().any(|(t, _)| t == token.as_bytes()) {
                errors.push(format!("token entry {n} ({name}): token used twice"));
            } else {
                entries.push((token.as_bytes().to_vec(), Principal { name: name.into(), role }));
            }
        }
        if errors.is_empty() { Ok(Self { entries }) } else { Err(errors) }
    }

    /// Adds a token.
    pub fn add(&mut self, name: &str, token: &str, role: Role) {
        self.entries.push((token.as_bytes().to_vec(), Principal { name: name.into(), role }));
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal a presented token belongs to. Every configured token is compared in
    /// constant time, so timing tells nothing about how much of a token was right.
    pub fn lookup(&self, presented: &str) -> Option<&Principal> {
        let presented = presented.as_bytes();
        let mut found = None;
        for (token, principal) in &self.entries {
            if constant_time_eq(token, presented) {
                found = Some(principal);
            }
        }
        found
    }
}

/// Whether two byte strings are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token (32 bytes from the OS, URL-safe base64 without padding: 43 characters).
pub fn generate_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(43);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let t = Tokens::parse("ops:0123456789abcdef:operator,\n view:fedcba9876543210:viewer\n")
            .unwrap();
        assert_eq!(t.lookup("0123456789abcdef").unwrap().role, Role::Operator);
        assert_eq!(t.lookup("fedcba9876543210").unwrap().name, "view");
        assert!(t.lookup("0123456789abcdeF").is_none());
        assert!(t.lookup("").is_none());
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }

    #[test]
    fn reports_every_problem_without_the_token() {
        let errors = Tokens::parse("a:short:admin,b:0123456789abcdef:root,c,a:0123456789abcdef:viewer,a:1123456789abcdef:viewer")
            .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors.iter().all(|e| !e.contains("0123456789abcdef") && !e.contains("short:")));
    }

    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(Tokens::parse(&format!("x:{a}:admin")).is_ok());
    }
}

//! Conditions: the `when`, `first` and `then` tables of a rule.
//!
//! ```toml
//! when = { all = [
//!   { field = "kind", eq = "login" },
//!   { field = "outcome", eq = "failure" },
//!   { not = { field = "src_ip", cidr = ["10.0.0.0/8", "192.168.0.0/16"] } },
//! ] }
//! ```
//!
//! A test is a table with `field` and exactly one operator: `eq`, `ne`, `in`, `glob`,
//! `regex`, `prefix`, `cidr`, `gt`, `ge`, `lt`, `le`, `exists`. Combinators are `all`, `any`
//! (arrays of conditions) and `not` (one condition). A test on a list field (Kubernetes
//! `groups`, `src_ip`) holds when it holds for any element; a test on a missing field is false
//! (except `exists = false` and `ne`).

use std::net::IpAddr;

use regex::Regex;
use toml::Value as Toml;

use super::field::{EventRef, FieldId, NAMES, Val};

/// A parsed condition.
#[derive(Clone, Debug)]
pub enum Cond {
    /// Every one holds (true when empty).
    All(Vec<Cond>),
    /// At least one holds.
    Any(Vec<Cond>),
    /// It does not hold.
    Not(Box<Cond>),
    /// A test of one field.
    Test(FieldId, Test),
}

/// One operator with its operand.
#[derive(Clone, Debug)]
pub enum Test {
    /// Equal text (numbers and booleans compare by their text form).
    Eq(String),
    /// Not equal (a missing field is not equal).
    Ne(String),
    /// Equal to one of these.
    In(Vec<String>),
    /// Shell-style pattern: `*` any run, `?` one character, whole value.
    Glob(String),
    /// Regular expression, searched anywhere in the value unless anchored.
    Regex(Regex),
    /// Starts with this path. `/etc` matches `/etc` and `/etc/x`, not `/etcx`.
    Prefix(String),
    /// The address lies in one of these networks.
    Cidr(Vec<Net>),
    /// Numeric comparison.
    Cmp(CmpOp, f64),
    /// The field is present (`true`) or absent (`false`).
    Exists(bool),
}

/// A numeric comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// An IP network: address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    len: u8,
}

impl Net {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        (len <= max).then_some(Self { addr, len })
    }

    /// Whether `ip` is inside. IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.len)) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len)) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl Cond {
    /// Whether the event satisfies the condition.
    pub fn eval(&self, event: &EventRef<'_>) -> bool {
        match self {
            Cond::All(items) => items.iter().all(|c| c.eval(event)),
            Cond::Any(items) => items.iter().any(|c| c.eval(event)),
            Cond::Not(inner) => !inner.eval(event),
            Cond::Test(field, test) => test.eval(&event.get(field)),
        }
    }

    /// The event kinds this condition can hold for, when it pins them down (a top-level
    /// `kind` test, directly or inside `all`); `None` means any kind. Rules are indexed by
    /// this so that an event is only tested against rules for its kind.
    pub fn kinds(&self) -> Option<Vec<String>> {
        match self {
            Cond::Test(FieldId::Kind, Test::Eq(k)) => Some(vec![k.clone()]),
            Cond::Test(FieldId::Kind, Test::In(ks)) => Some(ks.clone()),
            Cond::All(items) => {
                // The intersection of what the parts allow.
                let mut out: Option<Vec<String>> = None;
                for c in items {
                    if let Some(ks) = c.kinds() {
                        out = Some(match out {
                            None => ks,
                            Some(prev) => prev.into_iter().filter(|k| ks.contains(k)).collect(),
                        });
                    }
                }
                out
            }
            Cond::Any(items) => {
                let mut out = Vec::new();
                for c in items {
                    out.extend(c.kinds()?);
                }
                Some(out)
            }
            _ => None,
        }
    }
}

impl Test {
    fn eval(&self, val: &Val<'_>) -> bool {
        match (self, val) {
            (Test::Exists(want), v) => *want != matches!(v, Val::Missing),
            (Test::Ne(_), Val::Missing) => true,
            (_, Val::Missing) => false,
            (Test::Ne(x), Val::List(items)) => items.iter().all(|i| i != x),
            (_, Val::List(items)) => items.iter().any(|i| self.eval_text(i, None)),
            (Test::Cmp(op, rhs), v) => {
                let lhs = match v {
                    Val::Int(i) => *i as f64,
                    Val::Float(f) => *f,
                    Val::Str(s) => match s.trim().parse::<f64>() {
                        Ok(f) => f,
                        Err(_) => return false,
                    },
                    _ => return false,
                };
                match op {
                    CmpOp::Gt => lhs > *rhs,
                    CmpOp::Ge => lhs >= *rhs,
                    CmpOp::Lt => lhs < *rhs,
                    CmpOp::Le => lhs <= *rhs,
                }
            }
            (test, v) => {
                let ip = if let Val::Ip(ip) = v { Some(*ip) } else { None };
                v.text().is_some_and(|t| test.eval_text(&t, ip))
            }
        }
    }

    fn eval_text(&self, text: &str, ip: Option<IpAddr>) -> bool {
        match self {
            Test::Eq(x) => text == x,
            Test::Ne(x) => text != x,
            Test::In(xs) => xs.iter().any(|x| x == text),
            Test::Glob(p) => glob(p.as_bytes(), text.as_bytes()),
            Test::Regex(re) => re.is_match(text),
            Test::Prefix(p) => text
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || p.ends_with('/') || rest.starts_with('/')),
            Test::Cidr(nets) => ip
                .or_else(|| text.parse().ok())
                .is_some_and(|ip| nets.iter().any(|n| n.contains(ip))),
            Test::Cmp(op, rhs) => text.trim().parse::<f64>().is_ok_and(|lhs| match op {
                CmpOp::Gt => lhs > *rhs,
                CmpOp::Ge => lhs >= *rhs,
                CmpOp::Lt => lhs < *rhs,
                CmpOp::Le => lhs <= *rhs,
            }),
            Test::Exists(want) => *want,
        }
    }
}

/// Shell-style matching of the whole text: `*` matches any run (including `/`), `?` one byte.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point: linear in practice, no recursion to blow up.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

const OPERATORS: &[&str] =
    &["eq", "ne", "in", "glob", "regex", "prefix", "cidr", "gt", "ge", "lt", "le", "exists"];

/// Parses a condition; problems are pushed to `errors` prefixed with `at`.
pub fn parse(value: &Toml, at: &str, errors: &mut Vec<String>) -> Option<Cond> {
    let Some(table) = value.as_table() else {
        errors.push(format!("{at}: a condition must be a table"));
        return None;
    };
    let combinators: Vec<&str> =
        ["all", "any", "not"].into_iter().filter(|k| table.contains_key(*k)).collect();
    if let [comb] = combinators[..] {
        if table.len() != 1 {
            errors.push(format!("{at}: `{comb}` must be the only key of its table"));
            return None;
        }
        let inner = &table[comb];
        if comb == "not" {
            return parse(inner, &format!("{at}.not"), errors).map(|c| Cond::Not(Box::new(c)));
        }
        let Some(items) = inner.as_array() else {
            errors.push(format!("{at}.{comb}: must be an array of conditions"));
            return None;
        };
        let before = errors.len();
        let parsed: Vec<Cond> = items
            .iter()
            .enumerate()
            .filter_map(|(i, c)| parse(c, &format!("{at}.{comb}[{i}]"), errors))
            .collect();
        if errors.len() > before {
            return None;
        }
        return Some(if comb == "all" { Cond::All(parsed) } else { Cond::Any(parsed) });
    }
    if combinators.len() > 1 {
        errors.push(format!("{at}: use one of `all`, `any`, `not` per table"));
        return None;
    }

    let field = match table.get("field") {
        Some(Toml::String(name)) => match FieldId::parse(name) {
            Some(f) => f,
            None => {
                errors.push(format!(
                    "{at}.field: unknown field `{name}` (known: {}, fields.<name>, attrs.<name>)",
                    NAMES.join(", ")
                ));
                return None;
            }
        },
        Some(_) => {
            errors.push(format!("{at}.field: must be a string"));
            return None;
        }
        None => {
            errors.push(format!(
                "{at}: a condition needs `field` and one operator, or one of `all`, `any`, `not`"
            ));
            return None;
        }
    };
    let ops: Vec<(&String, &Toml)> = table.iter().filter(|(k, _)| *k != "field").collect();
    let [(op, operand)] = ops[..] else {
        errors.push(format!(
            "{at}: needs exactly one operator besides `field` (one of {})",
            OPERATORS.join(", ")
        ));
        return None;
    };
    let at = format!("{at}.{op}");
    let test = match op.as_str() {
        "eq" => scalar(operand).map(Test::Eq),
        "ne" => scalar(operand).map(Test::Ne),
        "in" => operand.as_array().and_then(|a| a.iter().map(scalar).collect()).map(Test::In),
        "glob" => operand.as_str().map(|p| Test::Glob(p.to_owned())),
        "prefix" => operand.as_str().map(|p| Test::Prefix(p.to_owned())),
        "regex" => match operand.as_str().map(Regex::new) {
            Some(Ok(re)) => Some(Test::Regex(re)),
            Some(Err(e)) => {
                errors.push(format!("{at}: invalid regular expression: {e}"));
                return None;
            }
            None => None,
        },
        "cidr" => {
            let texts: Option<Vec<&str>> = match operand {
                Toml::String(s) => Some(vec![s.as_str()]),
                Toml::Array(a) => a.iter().map(Toml::as_str).collect(),
                _ => None,
            };
            let Some(texts) = texts else {
                errors.push(format!("{at}: must be a network or an array of networks"));
                return None;
            };
            let mut nets = Vec::new();
            for t in texts {
                match Net::parse(t) {
                    Some(n) => nets.push(n),
                    None => {
                        errors.push(format!("{at}: `{t}` is not a network like 10.0.0.0/8"));
                        return None;
                    }
                }
            }
            Some(Test::Cidr(nets))
        }
        "gt" | "ge" | "lt" | "le" => {
            let cmp = match op.as_str() {
                "gt" => CmpOp::Gt,
                "ge" => CmpOp::Ge,
                "lt" => CmpOp::Lt,
                _ => CmpOp::Le,
            };
            match operand {
                Toml::Integer(i) => Some(Test::Cmp(cmp, *i as f64)),
                Toml::Float(f) => Some(Test::Cmp(cmp, *f)),
                _ => None,
            }
        }
        "exists" => operand.as_bool().map(Test::Exists),
        other => {
            errors.push(format!(
                "{at}: unknown operator `{other}` (one of {})",
                OPERATORS.join(", ")
            ));
            return None;
        }
    };
    match test {
        Some(t) => Some(Cond::Test(field, t)),
        None => {
            errors.push(format!("{at}: wrong type of operand for `{op}`"));
            None
        }
    }
}

/// A string, integer or boolean operand as text.
fn scalar(v: &Toml) -> Option<String> {
    match v {
        Toml::String(s) => Some(s.clone()),
        Toml::Integer(i) => Some(i.to_string()),
        Toml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use wire::model::{Event, EventKind, Outcome, Severity, Source, Timestamp};

    use super::*;

    fn cond(text: &str) -> Result<Cond, Vec<String>> {
        let v: Toml = toml::from_str::<toml::Table>(&format!("c = {text}")).unwrap()["c"].clone();
        let mut errors = Vec::new();
        parse(&v, "when", &mut errors).ok_or(errors)
    }

    fn login(user: &str, ip: &str) -> Event {
        Event::new(
            Timestamp(0),
            Source::AuthLog,
            Severity::Warning,
            EventKind::Login {
                user: user.into(),
                src_ip: ip.parse().ok(),
                method: Some("password".into()),
                outcome: Outcome::Failure,
                reason: None,
            },
        )
    }

    fn holds(c: &str, e: &Event) -> bool {
        cond(c).unwrap().eval(&EventRef { node: "pi-1", event: e })
    }

    #[test]
    fn operators() {
        let e = login("alice", "10.1.2.3");
        assert!(holds(r#"{ field = "user", eq = "alice" }"#, &e));
        assert!(!holds(r#"{ field = "user", ne = "alice" }"#, &e));
        assert!(holds(r#"{ field = "user", in = ["bob", "alice"] }"#, &e));
        assert!(holds(r#"{ field = "user", glob = "al*e" }"#, &e));
        assert!(!holds(r#"{ field = "user", glob = "al?e" }"#, &e));
        assert!(holds(r#"{ field = "user", regex = "^a.i" }"#, &e));
        assert!(holds(r#"{ field = "src_ip", cidr = "10.0.0.0/8" }"#, &e));
        assert!(!holds(r#"{ field = "src_ip", cidr = ["192.168.0.0/16"] }"#, &e));
        assert!(holds(r#"{ field = "reason", exists = false }"#, &e));
        assert!(!holds(r#"{ field = "reason", eq = "x" }"#, &e));
        assert!(holds(r#"{ field = "outcome", eq = "failure" }"#, &e));
        assert!(holds(r#"{ field = "host", eq = "pi-1" }"#, &e));
        assert!(holds(
            r#"{ all = [{ field = "kind", eq = "login" }, { not = { field = "user", eq = "root" } }] }"#,
            &e
        ));
        assert!(holds(
            r#"{ any = [{ field = "user", eq = "x" }, { field = "node", eq = "pi-1" }] }"#,
            &e
        ));
    }

    #[test]
    fn prefix_is_by_path_component_and_numbers_compare() {
        let e = Event::new(
            Timestamp(0),
            Source::FileWatch,
            Severity::Info,
            EventKind::FileChange {
                path: "/etc/ssh/sshd_config".into(),
                op: wire::model::FileOp::Modified,
                old_hash: None,
                new_hash: None,
                size_delta: Some(12),
            },
        );
        assert!(holds(r#"{ field = "path", prefix = "/etc/ssh" }"#, &e));
        assert!(holds(r#"{ field = "path", prefix = "/etc/" }"#, &e));
        assert!(!holds(r#"{ field = "path", prefix = "/etc/ss" }"#, &e));
        assert!(holds(r#"{ field = "size_delta", gt = 10 }"#, &e));
        assert!(!holds(r#"{ field = "size_delta", le = 11.5 }"#, &e));
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob(b"*", b""));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"/etc/*.conf", b"/etc/x/y.conf"));
        assert!(!glob(b"", b"x"));
    }

    #[test]
    fn cidr_parsing() {
        assert!(Net::parse("10.0.0.0/8").unwrap().contains("10.9.9.9".parse().unwrap()));
        assert!(Net::parse("0.0.0.0/0").unwrap().contains("1.2.3.4".parse().unwrap()));
        assert!(Net::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(Net::parse("10.0.0.0/8").unwrap().contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(Net::parse("10.0.0.0/33").is_none());
        assert!(Net::parse("banana").is_none());
    }

    #[test]
    fn errors_name_the_place() {
        let errs = cond(r#"{ field = "usr", eq = "x" }"#).unwrap_err();
        assert!(errs[0].contains("when.field: unknown field `usr`"), "{errs:?}");
        let errs =
            cond(r#"{ all = [{ field = "user", regex = "(" }, { field = "x" }] }"#).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("when.all[0].regex"), "{errs:?}");
        let errs = cond(r#"{ field = "user", eq = "a", ne = "b" }"#).unwrap_err();
        assert!(errs[0].contains("exactly one operator"), "{errs:?}");
        let errs = cond(r#"{ field = "user", gt = "a" }"#).unwrap_err();
        assert!(errs[0].contains("wrong type"), "{errs:?}");
    }

    #[test]
    fn kinds_index() {
        let c = cond(r#"{ all = [{ field = "kind", in = ["login", "privilege"] }, { field = "kind", eq = "login" }] }"#).unwrap();
        assert_eq!(c.kinds(), Some(vec!["login".to_owned()]));
        assert_eq!(cond(r#"{ field = "user", eq = "a" }"#).unwrap().kinds(), None);
    }
}

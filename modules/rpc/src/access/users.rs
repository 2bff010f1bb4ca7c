//! The `[[modules.rpc.users]]` table, checked and compiled once per
//! generation: each user's token hash, certificate names, limits and
//! permissions as compiled [`Rule`]s, so that a call looks nothing up by
//! text but the key or subject it names.
//!
//! Tokens are stored as `sha256:<64 lowercase hex>` of the token's UTF-8
//! bytes (what `switchyard --hash-token` prints). A login hashes the
//! offered token once and compares it with every candidate in constant
//! time (no early exit), so neither the hash nor which user nearly
//! matched leaks through timing.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::limit::{ConnCount, RateBucket};
use super::pattern::{Pattern, Rule};

/// The prefix of a stored token hash.
pub const HASH_PREFIX: &str = "sha256:";

/// A user's four rights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Perms {
    pub kv_read: Rule,
    pub kv_write: Rule,
    pub publish: Rule,
    pub subscribe: Rule,
    /// Stream names the user may create and delete (with their consumers).
    pub stream_admin: Rule,
}

/// One compiled user.
#[derive(Debug)]
pub struct User {
    pub name: Box<str>,
    /// SHA-256 of the token; `None` when the user logs in by certificate
    /// (or only as `no_auth_user`).
    pub token_hash: Option<[u8; 32]>,
    /// Client-certificate names (lowercase) that log in as this user.
    pub certs: Vec<String>,
    pub perms: Perms,
    /// `requests_per_second` (0: none) and its bucket.
    pub rate: u32,
    pub bucket: Option<RateBucket>,
    /// Raw TCP connections logged in as this user.
    pub conns: ConnCount,
}

impl User {
    /// The stored hash as configured (for the reload hand-over, which
    /// drops token logins whose hash changed).
    pub fn hash_text(&self) -> Option<String> {
        self.token_hash.map(|h| format!("{HASH_PREFIX}{}", hex(&h)))
    }

    /// Takes one call from the user's rate bucket; `false` past it.
    pub fn admit_call(&self) -> bool {
        self.bucket
            .as_ref()
            .map_or(true, |b| b.take(super::limit::now_ns()))
    }
}

/// Every user of a generation.
#[derive(Debug, Default)]
pub struct Users {
    list: Vec<Arc<User>>,
    by_name: HashMap<Box<str>, usize>,
    by_cert: HashMap<String, usize>,
    no_auth_user: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserConfig {
    name: String,
    #[serde(default)]
    token_hash: Option<String>,
    #[serde(default)]
    certs: Vec<String>,
    #[serde(default)]
    max_connections: u32,
    #[serde(default)]
    requests_per_second: u32,
    #[serde(default)]
    permissions: PermsConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PermsConfig {
    #[serde(default)]
    kv_read: Option<serde_json::Value>,
    #[serde(default)]
    kv_write: Option<serde_json::Value>,
    #[serde(default)]
    publish: Option<serde_json::Value>,
    #[serde(default)]
    subscribe: Option<serde_json::Value>,
    #[serde(default)]
    stream_admin: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitRule {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// Parses `sha256:<64 lowercase hex>`.
pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let bad = || format!("token_hash must be \"{HASH_PREFIX}\" and 64 lowercase hex digits");
    let hex = text.strip_prefix(HASH_PREFIX).ok_or_else(bad)?;
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(bad()),
        };
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The SHA-256 of a token's UTF-8 bytes.
pub fn hash_token(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two hashes in time independent of where they differ.
pub fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

fn rule(user: &str, right: &str, v: Option<serde_json::Value>) -> Result<Rule, String> {
    let (allow, deny) = match v {
        None => return Ok(Rule::default()),
        Some(serde_json::Value::Array(_)) => {
            let list: Vec<String> = serde_json::from_value(v.unwrap_or_default())
                .map_err(|e| format!("user {user:?}: permissions.{right}: {e}"))?;
            (list, Vec::new())
        }
        Some(v) => {
            let s: SplitRule = serde_json::from_value(v).map_err(|e| {
                format!(
                    "user {user:?}: permissions.{right} must be a list of patterns or \
                     {{ allow = [...], deny = [...] }}: {e}"
                )
            })?;
            (s.allow, s.deny)
        }
    };
    let compile = |list: Vec<String>| {
        list.iter()
            .map(|p| {
                Pattern::parse(p).map_err(|e| format!("user {user:?}: permissions.{right}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Rule {
        allow: compile(allow)?,
        deny: compile(deny)?,
    })
}

impl Users {
    /// Checks and compiles the configured users; the error names the
    /// user and what is wrong.
    pub fn compile(
        users: &[serde_json::Value],
        no_auth_user: Option<&str>,
    ) -> Result<Users, String> {
        let mut out = Users::default();
        let mut hashes: HashMap<[u8; 32], String> = HashMap::new();
        for (i, v) in users.iter().enumerate() {
            let c: UserConfig = serde_json::from_value(v.clone()).map_err(|e| {
                let name = v.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                format!("users[{i}] (user {name:?}): {e}")
            })?;
            let name = c.name.as_str();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err(format!(
                    "users[{i}]: name must be 1 to 128 characters without control characters"
                ));
            }
            if out.by_name.contains_key(name) {
                return Err(format!("user {name:?} is configured twice"));
            }
            let token_hash = match &c.token_hash {
                Some(h) => Some(parse_hash(h).map_err(|e| format!("user {name:?}: {e}"))?),
                None => None,
            };
            if let Some(h) = token_hash {
                if let Some(other) = hashes.insert(h, name.to_string()) {
                    return Err(format!(
                        "users {other:?} and {name:?} have the same token_hash; give each its own token"
                    ));
                }
            }
            let is_default = no_auth_user == Some(name);
            if token_hash.is_none() && c.certs.is_empty() && !is_default {
                return Err(format!(
                    "user {name:?} has neither token_hash nor certs, so nobody can log in as it"
                ));
            }
            let certs: Vec<String> = c.certs.iter().map(|s| s.to_ascii_lowercase()).collect();
            for cert in &certs {
                if cert.is_empty() {
                    return Err(format!("user {name:?}: an empty certificate name"));
                }
                if let Some(&j) = out.by_cert.get(cert) {
                    return Err(format!(
                        "users {:?} and {name:?} both claim the certificate name {cert:?}",
                        out.list[j].name
                    ));
                }
                out.by_cert.insert(cert.clone(), out.list.len());
            }
            let p = c.permissions;
            let perms = Perms {
                kv_read: rule(name, "kv_read", p.kv_read)?,
                kv_write: rule(name, "kv_write", p.kv_write)?,
                publish: rule(name, "publish", p.publish)?,
                subscribe: rule(name, "subscribe", p.subscribe)?,
                stream_admin: rule(name, "stream_admin", p.stream_admin)?,
            };
            out.by_name.insert(name.into(), out.list.len());
            out.list.push(Arc::new(User {
                name: name.into(),
                token_hash,
                certs,
                perms,
                rate: c.requests_per_second,
                bucket: (c.requests_per_second > 0).then(|| RateBucket::new(c.requests_per_second)),
                conns: ConnCount::new(c.max_connections),
            }));
        }
        if let Some(d) = no_auth_user {
            let Some(&i) = out.by_name.get(d) else {
                return Err(format!(
                    "no_auth_user = {d:?} names no user in [[modules.rpc.users]]"
                ));
            };
            out.no_auth_user = Some(i);
        }
        Ok(out)
    }

    /// How many users are configured.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// No users: the bus is in protected mode.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    /// The user whose token this is (only `name`'s when given). One
    /// SHA-256, then a constant-time compare with every candidate.
    pub fn by_token(&self, token: &str, name: Option<&str>) -> Option<&Arc<User>> {
        let offered = hash_token(token);
        let mut found = None;
        for u in &self.list {
            if name.is_some_and(|n| n != &*u.name) {
                continue;
            }
            // Every candidate is compared, also after a match.
            if u.token_hash.is_some_and(|h| same_hash(&h, &offered)) {
                found = Some(u);
            }
        }
        found
    }

    /// The user that the first of a certificate's names (CN, then SANs)
    /// listed in some user's `certs` logs in as.
    pub fn by_certs(&self, names: &[String]) -> Option<&Arc<User>> {
        names
            .iter()
            .find_map(|n| self.by_cert.get(&n.to_ascii_lowercase()))
            .map(|&i| &self.list[i])
    }

    /// Whether any user logs in by certificate (else the host is not
    /// asked for certificate names at all).
    pub fn has_certs(&self) -> bool {
        !self.by_cert.is_empty()
    }

    /// The user unauthenticated connections act as.
    pub fn no_auth_user(&self) -> Option<&Arc<User>> {
        self.no_auth_user.map(|i| &self.list[i])
    }
}

/// A rule as JSON for `sys.whoami`.
pub fn rule_json(r: &Rule) -> serde_json::Value {
    let list = |ps: &[Pattern]| {
        ps.iter()
            .map(|p| p.as_str().to_string())
            .collect::<Vec<_>>()
    };
    serde_json::json!({"allow": list(&r.allow), "deny": list(&r.deny)})
}

/// A user's permissions as JSON for `sys.whoami`.
pub fn perms_json(p: &Perms) -> serde_json::Value {
    serde_json::json!({
        "kv_read": rule_json(&p.kv_read),
        "kv_write": rule_json(&p.kv_write),
        "publish": rule_json(&p.publish),
        "subscribe": rule_json(&p.subscribe),
        "stream_admin": rule_json(&p.stream_admin),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOKEN: &str = "s3cret";

    fn hash(t: &str) -> String {
        format!("{HASH_PREFIX}{}", hex(&hash_token(t)))
    }

    #[test]
    fn hash_format() {
        // sha256("abc"), a published test vector.
        let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hash("abc"), abc);
        assert_eq!(parse_hash(abc).unwrap(), hash_token("abc"));
        for bad in [
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            "sha256:ba7816bf",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015adff",
            "sha256:zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "md5:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ] {
            assert!(parse_hash(bad).is_err(), "{bad}");
        }
        assert!(same_hash(&hash_token("a"), &hash_token("a")));
        assert!(!same_hash(&hash_token("a"), &hash_token("b")));
    }

    fn users(v: serde_json::Value, default: Option<&str>) -> Result<Users, String> {
        Users::compile(v.as_array().unwrap(), default)
    }

    #[test]
    fn compiles_and_finds_users() {
        let u = users(
            json!([
                {"name": "bot1", "token_hash": hash(TOKEN), "certs": ["Bot1.Example.org"],
                 "max_connections": 2, "requests_per_second": 5,
                 "permissions": {"kv_read": ["bot1.>", "shared.*"],
                                 "publish": {"allow": ["bot1.>"], "deny": ["bot1.secret"]}}},
                {"name": "bot2", "token_hash": hash("other")},
                {"name": "guest"}
            ]),
            Some("guest"),
        )
        .unwrap();
        let bot1 = u.by_token(TOKEN, None).unwrap();
        assert_eq!(&*bot1.name, "bot1");
        assert!(u.by_token(TOKEN, Some("bot1")).is_some());
        assert!(
            u.by_token(TOKEN, Some("bot2")).is_none(),
            "the name must match"
        );
        assert!(u.by_token("wrong", None).is_none());
        assert!(u.by_token(TOKEN, Some("guest")).is_none(), "no token");
        assert!(bot1.perms.kv_read.allows("shared.x"));
        assert!(
            !bot1.perms.kv_write.allows("bot1.x"),
            "absent list: nothing"
        );
        assert!(!bot1.perms.publish.allows("bot1.secret"));
        assert_eq!(bot1.conns.max(), 2);
        assert_eq!(bot1.rate, 5);
        assert_eq!(&*u.no_auth_user().unwrap().name, "guest");
        assert!(u.has_certs());
        assert_eq!(
            &*u.by_certs(&["other".into(), "bot1.example.ORG".into()])
                .unwrap()
                .name,
            "bot1",
            "any listed name of the certificate, case-insensitive"
        );
        assert!(u.by_certs(&["nobody".into()]).is_none());
        assert!(u.by_certs(&[]).is_none());
        assert_eq!(bot1.hash_text().unwrap(), hash(TOKEN));
    }

    #[test]
    fn refuses_bad_tables_naming_the_user() {
        let h = hash(TOKEN);
        let cases = [
            (
                json!([{"name": "a", "token_hash": h}, {"name": "a", "token_hash": hash("x")}]),
                None,
                "\"a\" is configured twice",
            ),
            (
                json!([{"name": "b", "token_hash": "sha256:xyz"}]),
                None,
                "user \"b\": token_hash must be",
            ),
            (
                json!([{"name": "c", "token_hash": h, "permissions": {"kv_read": ["c..x"]}}]),
                None,
                "user \"c\": permissions.kv_read",
            ),
            (
                json!([{"name": "d", "token_hash": h}]),
                Some("e"),
                "no_auth_user = \"e\"",
            ),
            (
                json!([{"name": "f", "certs": ["x.org"]}, {"name": "g", "certs": ["X.org"]}]),
                None,
                "\"f\" and \"g\" both claim",
            ),
            (json!([{"name": "h"}]), None, "user \"h\" has neither"),
            (
                json!([{"name": "i", "token_hash": h, "colour": 1}]),
                None,
                "user \"i\"",
            ),
            (
                json!([{"name": "j", "token_hash": h}, {"name": "k", "token_hash": h}]),
                None,
                "same token_hash",
            ),
            (
                json!([{"name": "l", "token_hash": h, "permissions": {"publish": {"allow": ["x"], "deny": 3}}}]),
                None,
                "user \"l\": permissions.publish",
            ),
        ];
        for (v, default, want) in cases {
            let e = users(v.clone(), default).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
        assert!(users(json!([]), None).unwrap().is_empty());
    }
}

//! Which route a connection's first bytes pick: the longest matching
//! prefix, as the host's router does; for the TLS record prefix, the
//! ClientHello's server name (exact, then `*.` wildcard for one label, then
//! the default route). Pure: bytes in, decision out.

use std::collections::HashMap;

use module_api::tls::{self, Sni};

use crate::config::{Config, Match, TLS_PREFIX};

/// The outcome for one connection's buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Proxy to route `n`.
    Route(usize),
    /// The bytes so far could still match a longer prefix or are a
    /// partial ClientHello.
    NeedMore,
    /// No route takes these bytes; the reason for the log.
    Refuse(Refusal),
}

/// Why no route took a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No configured prefix matches (the host routed a prefix to the
    /// module that its config no longer has).
    NoPrefix,
    /// Began like TLS but is not a ClientHello.
    NotTls,
    /// A ClientHello whose name (if any) no route takes, and no default.
    NoSniRoute(Option<String>),
}

enum Target {
    Route(usize),
    Tls,
}

/// The routes of one generation, indexed for matching.
pub struct Matcher {
    /// Longest first.
    prefixes: Vec<(Vec<u8>, Target)>,
    exact: HashMap<String, usize>,
    /// `"example.com"` for `*.example.com`.
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
}

impl Matcher {
    pub fn new(config: &Config) -> Matcher {
        let mut m = Matcher {
            prefixes: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: config.default_route,
        };
        for (i, r) in config.routes.iter().enumerate() {
            match &r.matcher {
                Match::Prefix(p) => m.prefixes.push((p.clone(), Target::Route(i))),
                Match::Sni(name) => match name.strip_prefix("*.") {
                    Some(rest) => {
                        m.wildcard.insert(rest.to_string(), i);
                    }
                    None => {
                        m.exact.insert(name.clone(), i);
                    }
                },
                Match::DefaultOnly => {}
            }
        }
        if config.wants_tls() {
            m.prefixes.push((TLS_PREFIX.to_vec(), Target::Tls));
        }
        m.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        m
    }

    /// The prefixes to bind with the host.
    pub fn bindings(&self) -> Vec<Vec<u8>> {
        self.prefixes.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Picks the route for a connection's first bytes.
    pub fn decide(&self, input: &[u8]) -> Decision {
        // A longer prefix that the input has not ruled out yet wins over
        // a shorter one it already matches: wait, as the host's router does.
        if self
            .prefixes
            .iter()
            .any(|(p, _)| p.len() > input.len() && p.starts_with(input))
        {
            return Decision::NeedMore;
        }
        match self.prefixes.iter().find(|(p, _)| input.starts_with(p)) {
            None => Decision::Refuse(Refusal::NoPrefix),
            Some((_, Target::Route(i))) => Decision::Route(*i),
            Some((_, Target::Tls)) => match tls::sni(input) {
                Sni::Incomplete => Decision::NeedMore,
                Sni::NotTls => Decision::Refuse(Refusal::NotTls),
                Sni::Hello(name) => match self.by_name(name.as_deref()).or(self.default) {
                    Some(i) => Decision::Route(i),
                    None => Decision::Refuse(Refusal::NoSniRoute(name)),
                },
            },
        }
    }

    /// The `sni` route for a (lowercase) server name.
    fn by_name(&self, name: Option<&str>) -> Option<usize> {
        let name = name?;
        if let Some(i) = self.exact.get(name) {
            return Some(*i);
        }
        let (first, rest) = name.split_once('.')?;
        if first.is_empty() {
            return None;
        }
        self.wildcard.get(rest).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use module_api::tls::client_hello;
    use serde_json::json;

    fn matcher(routes: serde_json::Value) -> Matcher {
        Matcher::new(&parse(&json!({ "routes": routes })).unwrap())
    }

    #[test]
    fn longest_prefix_wins_and_waits() {
        let m = matcher(json!([
            {"prefix": "SSH-", "upstreams": ["127.0.0.1:1"]},
            {"prefix": "SSH-2.0-special", "upstreams": ["127.0.0.1:2"]},
            {"prefix": "ECHO", "upstreams": ["127.0.0.1:3"]},
        ]));
        assert_eq!(m.decide(b"ECHO hello"), Decision::Route(2));
        assert_eq!(m.decide(b"EC"), Decision::NeedMore);
        assert_eq!(m.decide(b"SSH-2.0-OpenSSH"), Decision::Route(0));
        assert_eq!(m.decide(b"SSH-2.0-spec"), Decision::NeedMore);
        assert_eq!(m.decide(b"SSH-2.0-special\r\n"), Decision::Route(1));
        assert_eq!(
            m.decide(b"GET / HTTP/1.1"),
            Decision::Refuse(Refusal::NoPrefix)
        );
        assert_eq!(
            m.bindings(),
            vec![
                b"SSH-2.0-special".to_vec(),
                b"SSH-".to_vec(),
                b"ECHO".to_vec()
            ]
        );
    }

    #[test]
    fn sni_exact_then_wildcard_then_default() {
        let routes = json!([
            {"sni": "db.example.test", "upstreams": ["127.0.0.1:1"]},
            {"sni": "*.example.test", "upstreams": ["127.0.0.1:2"]},
            {"prefix": "ECHO", "upstreams": ["127.0.0.1:3"]},
        ]);
        let m = matcher(routes.clone());
        assert!(m.bindings().contains(&TLS_PREFIX.to_vec()));
        let hello = |n: Option<&str>| m.decide(&client_hello(n));
        assert_eq!(hello(Some("db.example.test")), Decision::Route(0));
        assert_eq!(hello(Some("DB.Example.Test")), Decision::Route(0));
        assert_eq!(hello(Some("web.example.test")), Decision::Route(1));
        // One label only, and not the bare domain.
        assert_eq!(
            hello(Some("a.b.example.test")),
            Decision::Refuse(Refusal::NoSniRoute(Some("a.b.example.test".into())))
        );
        assert_eq!(
            hello(Some("example.test")),
            Decision::Refuse(Refusal::NoSniRoute(Some("example.test".into())))
        );
        assert_eq!(hello(None), Decision::Refuse(Refusal::NoSniRoute(None)));
        let rec = client_hello(Some("db.example.test"));
        for cut in 0..rec.len() {
            assert_eq!(m.decide(&rec[..cut]), Decision::NeedMore, "cut at {cut}");
        }
        assert_eq!(
            m.decide(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"),
            Decision::Refuse(Refusal::NotTls)
        );

        let mut with_default = routes.as_array().unwrap().clone();
        with_default.push(json!({"name": "other", "default": true, "upstreams": ["127.0.0.1:4"]}));
        let m = matcher(json!(with_default));
        assert_eq!(
            m.decide(&client_hello(Some("nope.test"))),
            Decision::Route(3)
        );
        assert_eq!(m.decide(&client_hello(None)), Decision::Route(3));
        assert_eq!(
            m.decide(&client_hello(Some("db.example.test"))),
            Decision::Route(0)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let m = matcher(json!([
            {"sni": "a.example.test", "upstreams": ["127.0.0.1:1"]},
            {"prefix": "\\x16\\x03\\x03", "upstreams": ["127.0.0.1:2"]},
        ]));
        let rec = client_hello(Some("a.example.test"));
        let mut x: u64 = 0x2545f4914f6cdd1d;
        for round in 0..20_000 {
            let mut b = rec.clone();
            for _ in 0..1 + round % 4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = (x >> 32) as u8;
            }
            let cut = (x >> 40) as usize % (b.len() + 1);
            let _ = m.decide(&b[..cut]);
            let _ = m.decide(&b);
        }
    }
}

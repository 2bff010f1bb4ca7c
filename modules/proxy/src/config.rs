//! The `[modules.proxy]` table, checked when a generation starts. Every
//! error names the route and the field (`route "ECHO": upstreams[1]: ...`),
//! so a bad config is refused at load with a reason the operator can act
//! on, and the running generation keeps serving.
//!
//! Settings other than `routes` and `default_route` are defaults that a
//! route may override with the same key.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Map, Value};

/// Most upstreams one route may list (retries track them in a bit set).
pub const MAX_UPSTREAMS: usize = 64;
/// Largest weight an upstream may have.
pub const MAX_WEIGHT: u32 = 1000;
/// The first bytes of every TLS handshake record (type 22, version 3.x):
/// what the module binds for its SNI routes.
pub const TLS_PREFIX: &[u8] = b"\x16\x03";

/// The whole table.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub routes: Vec<Route>,
    /// Index into `routes` of the route that takes TLS connections whose
    /// server name matches no `sni` route (or that send none).
    pub default_route: Option<usize>,
}

/// What sends a connection to a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The connection's first bytes.
    Prefix(Vec<u8>),
    /// The TLS ClientHello's server name: exact (lowercase) or, when it
    /// starts with `*.`, any one label followed by the rest.
    Sni(String),
    /// Only the default route: reached by TLS connections no `sni` route
    /// takes.
    DefaultOnly,
}

/// How a route spreads connections over its upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round-robin (nginx's algorithm).
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConn,
}

/// PROXY protocol header sent to the upstream before the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    V1,
    V2,
}

/// One upstream server of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub weight: u32,
}

/// Active health checks: a TCP connect every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Zero: no active checks.
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a down upstream back.
    pub rise: u32,
    /// Consecutive failures that take an up upstream down.
    pub fall: u32,
}

/// One `[[modules.proxy.routes]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// What `STATUS` and the log call it: `name`, else the `sni` name, else
    /// the prefix with unprintable bytes escaped.
    pub name: String,
    pub matcher: Match,
    pub upstreams: Vec<Upstream>,
    pub balance: Balance,
    /// Other upstreams tried after a failed connect.
    pub retries: u32,
    /// How long an upstream that refused a connection is skipped (zero:
    /// never skipped for that).
    pub fail_timeout: Duration,
    pub health: Health,
    pub proxy_protocol: ProxyProtocol,
}

impl Config {
    /// Whether the module must bind the TLS record prefix.
    pub fn wants_tls(&self) -> bool {
        self.default_route.is_some()
            || self
                .routes
                .iter()
                .any(|r| matches!(r.matcher, Match::Sni(_)))
    }
}

/// Settings a route inherits from the top level.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    balance: Balance,
    retries: u32,
    fail_timeout: Duration,
    health: Health,
    proxy_protocol: ProxyProtocol,
}

const INHERITED: &[&str] = &[
    "balance",
    "retries",
    "fail_timeout",
    "health_interval",
    "health_timeout",
    "health_rise",
    "health_fall",
    "proxy_protocol",
];
const ROUTE_ONLY: &[&str] = &["name", "prefix", "sni", "upstreams", "weights", "default"];
const TOP_ONLY: &[&str] = &["routes", "default_route"];

/// Reads the module's table; `{}` is a valid config with no routes.
pub fn parse(config: &Value) -> Result<Config, String> {
    let top = config
        .as_object()
        .ok_or("[modules.proxy] must be a table")?;
    if let Some(k) = top
        .keys()
        .find(|k| !TOP_ONLY.contains(&k.as_str()) && !INHERITED.contains(&k.as_str()))
    {
        return Err(format!("[modules.proxy]: unknown key {k:?}"));
    }
    let base = Defaults {
        balance: Balance::RoundRobin,
        retries: 2,
        fail_timeout: Duration::from_secs(10),
        health: Health {
            interval: Duration::ZERO,
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
        },
        proxy_protocol: ProxyProtocol::Off,
    };
    let defaults = settings(top, base).map_err(|e| format!("[modules.proxy]: {e}"))?;

    let list = match top.get("routes") {
        None => &Vec::new(),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err("routes: must be an array of tables ([[modules.proxy.routes]])".into())
        }
    };
    let mut routes: Vec<Route> = Vec::with_capacity(list.len());
    let mut defaults_flagged = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let (route, is_default) = parse_route(i, v, &defaults)?;
        check_unique(&routes, &route)?;
        if is_default {
            defaults_flagged.push(routes.len());
        }
        routes.push(route);
    }

    let mut default_route = match defaults_flagged.as_slice() {
        [] => None,
        [one] => Some(*one),
        [a, b, ..] => {
            return Err(format!(
                "route {:?}: default: route {:?} is the default already",
                routes[*b].name, routes[*a].name
            ))
        }
    };
    match top.get("default_route") {
        None => {}
        Some(Value::String(name)) => {
            let i = routes
                .iter()
                .position(|r| r.name == *name)
                .ok_or_else(|| format!("default_route: no route is named {name:?}"))?;
            if default_route.is_some_and(|d| d != i) {
                return Err(format!(
                    "default_route: {name:?} conflicts with `default = true` on route {:?}",
                    routes[default_route.unwrap_or(0)].name
                ));
            }
            default_route = Some(i);
        }
        Some(_) => return Err("default_route: must be a route name".into()),
    }
    for (i, r) in routes.iter().enumerate() {
        if r.matcher == Match::DefaultOnly && default_route != Some(i) {
            return Err(format!(
                "route {:?}: needs `prefix` or `sni` (or `default = true`)",
                r.name
            ));
        }
    }
    let config = Config {
        routes,
        default_route,
    };
    if config.wants_tls() {
        if let Some(r) = config
            .routes
            .iter()
            .find(|r| r.matcher == Match::Prefix(TLS_PREFIX.to_vec()))
        {
            return Err(format!(
                "route {:?}: prefix: \\x16\\x03 is the TLS record prefix that sni and \
                 default routes bind",
                r.name
            ));
        }
    }
    Ok(config)
}

fn parse_route(index: usize, v: &Value, defaults: &Defaults) -> Result<(Route, bool), String> {
    let t = v
        .as_object()
        .ok_or_else(|| format!("routes[{index}]: must be a table"))?;
    let text = |field: &str| -> Result<Option<&str>, String> {
        match t.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("routes[{index}]: {field}: must be a string")),
        }
    };
    let prefix = text("prefix")?;
    let sni = text("sni")?;
    let matcher = match (prefix, sni) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "routes[{index}]: has both prefix and sni; a route matches one of them"
            ))
        }
        (Some(p), None) => {
            Match::Prefix(unescape(p).map_err(|e| format!("routes[{index}]: prefix: {e}"))?)
        }
        (None, Some(s)) => {
            Match::Sni(sni_pattern(s).map_err(|e| format!("routes[{index}]: sni: {s:?}: {e}"))?)
        }
        (None, None) => Match::DefaultOnly,
    };
    let name = match text("name")? {
        Some(n) if valid_name(n) => n.to_string(),
        Some(n) => {
            return Err(format!(
                "routes[{index}]: name: {n:?} must be 1-64 letters, digits or ._-*"
            ))
        }
        None => match &matcher {
            Match::Prefix(p) => escape(p),
            Match::Sni(s) => s.clone(),
            Match::DefaultOnly => format!("route{index}"),
        },
    };
    let err = |field: &str, why: String| format!("route {name:?}: {field}: {why}");
    if let Some(k) = t
        .keys()
        .find(|k| !ROUTE_ONLY.contains(&k.as_str()) && !INHERITED.contains(&k.as_str()))
    {
        return Err(format!("route {name:?}: unknown key {k:?}"));
    }
    if let Match::Prefix(p) = &matcher {
        if p.is_empty() {
            return Err(err("prefix", "must not be empty".into()));
        }
    }
    let is_default = match t.get("default") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(err("default", "must be true or false".into())),
    };

    let s = settings(t, *defaults).map_err(|e| format!("route {name:?}: {e}"))?;
    let upstreams = upstreams(t).map_err(|e| format!("route {name:?}: {e}"))?;
    Ok((
        Route {
            name,
            matcher,
            upstreams,
            balance: s.balance,
            retries: s.retries,
            fail_timeout: s.fail_timeout,
            health: s.health,
            proxy_protocol: s.proxy_protocol,
        },
        is_default,
    ))
}

/// Reads the inheritable settings present in `t` over `base`.
fn settings(t: &Map<String, Value>, base: Defaults) -> Result<Defaults, String> {
    let mut s = base;
    if let Some(v) = t.get("balance") {
        s.balance = match v.as_str() {
            Some("round_robin") | Some("roundrobin") => Balance::RoundRobin,
            Some("least_conn") | Some("leastconn") => Balance::LeastConn,
            _ => return Err("balance: must be \"round_robin\" or \"least_conn\"".into()),
        };
    }
    if let Some(v) = t.get("retries") {
        s.retries = v
            .as_u64()
            .filter(|n| *n <= MAX_UPSTREAMS as u64)
            .ok_or(format!("retries: must be a whole number 0-{MAX_UPSTREAMS}"))?
            as u32;
    }
    if let Some(v) = t.get("fail_timeout") {
        s.fail_timeout = duration(v).map_err(|e| format!("fail_timeout: {e}"))?;
    }
    if let Some(v) = t.get("health_interval") {
        s.health.interval = duration(v).map_err(|e| format!("health_interval: {e}"))?;
    }
    if let Some(v) = t.get("health_timeout") {
        s.health.timeout = duration(v).map_err(|e| format!("health_timeout: {e}"))?;
        if s.health.timeout.is_zero() {
            return Err("health_timeout: must be more than 0".into());
        }
    }
    for (key, field) in [
        ("health_rise", &mut s.health.rise),
        ("health_fall", &mut s.health.fall),
    ] {
        if let Some(v) = t.get(key) {
            *field = v
                .as_u64()
                .filter(|n| (1..=100).contains(n))
                .ok_or(format!("{key}: must be a whole number 1-100"))? as u32;
        }
    }
    if let Some(v) = t.get("proxy_protocol") {
        s.proxy_protocol = match v {
            Value::String(x) if x == "v1" => ProxyProtocol::V1,
            Value::String(x) if x == "v2" => ProxyProtocol::V2,
            Value::String(x) if x == "off" => ProxyProtocol::Off,
            Value::Bool(false) => ProxyProtocol::Off,
            Value::Number(n) if n.as_u64() == Some(1) => ProxyProtocol::V1,
            Value::Number(n) if n.as_u64() == Some(2) => ProxyProtocol::V2,
            _ => return Err("proxy_protocol: must be \"v1\", \"v2\" or \"off\"".into()),
        };
    }
    Ok(s)
}

/// `upstreams` (strings `"host:port"` or tables `{ addr, weight }`) and the
/// optional parallel `weights` array.
fn upstreams(t: &Map<String, Value>) -> Result<Vec<Upstream>, String> {
    let list = match t.get("upstreams") {
        None => return Err("upstreams: missing (a list of \"ip:port\")".into()),
        Some(Value::Array(l)) if !l.is_empty() => l,
        Some(Value::Array(_)) => return Err("upstreams: must not be empty".into()),
        Some(_) => return Err("upstreams: must be a list of \"ip:port\"".into()),
    };
    if list.len() > MAX_UPSTREAMS {
        return Err(format!("upstreams: at most {MAX_UPSTREAMS} per route"));
    }
    let weights: Option<&Vec<Value>> = match t.get("weights") {
        None => None,
        Some(Value::Array(w)) if w.len() == list.len() => Some(w),
        Some(_) => {
            return Err(format!(
                "weights: must be a list of {} numbers, one per upstream",
                list.len()
            ))
        }
    };
    let weight_of = |v: &Value, what: &str| -> Result<u32, String> {
        v.as_u64()
            .filter(|w| (1..=MAX_WEIGHT as u64).contains(w))
            .map(|w| w as u32)
            .ok_or(format!("{what}: must be a whole number 1-{MAX_WEIGHT}"))
    };
    let mut out: Vec<Upstream> = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let (addr, mut weight) = match v {
            Value::String(s) => (s.as_str(), 1),
            Value::Object(o) => {
                if let Some(k) = o.keys().find(|k| *k != "addr" && *k != "weight") {
                    return Err(format!("upstreams[{i}]: unknown key {k:?}"));
                }
                let addr = o
                    .get("addr")
                    .and_then(Value::as_str)
                    .ok_or(format!("upstreams[{i}]: addr: missing (\"ip:port\")"))?;
                let w = match o.get("weight") {
                    Some(w) => weight_of(w, &format!("upstreams[{i}]: weight"))?,
                    None => 1,
                };
                (addr, w)
            }
            _ => {
                return Err(format!(
                    "upstreams[{i}]: must be \"ip:port\" or {{ addr = \"ip:port\", weight = N }}"
                ))
            }
        };
        if let Some(w) = weights {
            weight = weight_of(&w[i], &format!("weights[{i}]"))?;
        }
        let addr = resolve(addr).map_err(|e| format!("upstreams[{i}]: {addr:?}: {e}"))?;
        if out.iter().any(|u| u.addr == addr) {
            return Err(format!("upstreams[{i}]: {addr} is listed twice"));
        }
        out.push(Upstream { addr, weight });
    }
    Ok(out)
}

/// `ip:port`, `[v6]:port`, or `name:port` resolved now (once per
/// generation: a reload picks up DNS changes).
fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return check_port(a);
    }
    if !s.contains(':') {
        return Err("needs a port (\"ip:port\")".into());
    }
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?;
    let a = addrs.next().ok_or("resolves to no address")?;
    check_port(a)
}

fn check_port(a: SocketAddr) -> Result<SocketAddr, String> {
    if a.port() == 0 {
        return Err("port 0 is not a port to connect to".into());
    }
    Ok(a)
}

/// A duration: `"500ms"`, `"2s"`, `"1m"`, `"0"`, or a number of seconds.
pub fn duration(v: &Value) -> Result<Duration, String> {
    const HINT: &str = "must be a duration such as \"500ms\", \"2s\" or \"1m\"";
    if let Some(n) = v.as_u64() {
        return Ok(Duration::from_secs(n));
    }
    let s = v.as_str().ok_or(HINT)?.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or(HINT)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| HINT)?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(HINT.into()),
    };
    Ok(Duration::from_millis(ms))
}

/// The prefix bytes: the string's UTF-8 with `\xHH` (and `\\`) escapes, so
/// `"\\x16\\x03"` in TOML (or `"\u0016\u0003"`) is bytes 0x16 0x03.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = b
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("\\x must be followed by two hex digits")?;
                out.push(hex);
                i += 4;
            }
            _ => return Err("unknown escape (use \\xHH for a byte, \\\\ for a backslash)".into()),
        }
    }
    Ok(out)
}

/// Bytes as a name without spaces: printable ASCII as is, other bytes as
/// `\xHH`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &c in bytes {
        if c.is_ascii_alphanumeric() || b"._-*/+:!#$%&@^~".contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

/// A server name as the route matches it: lowercase; `*.` only as the
/// whole first label.
fn sni_pattern(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if !ok {
        return Err("must be a DNS name, or *. followed by one".into());
    }
    Ok(lower)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-*".contains(&c))
}

fn check_unique(routes: &[Route], r: &Route) -> Result<(), String> {
    for o in routes {
        if o.name == r.name {
            return Err(format!(
                "route {:?}: name: used by another route already (set `name`)",
                r.name
            ));
        }
        if r.matcher != Match::DefaultOnly && o.matcher == r.matcher {
            let what = match &r.matcher {
                Match::Sni(_) => "sni",
                _ => "prefix",
            };
            return Err(format!(
                "route {:?}: {what}: route {:?} matches the same",
                r.name, o.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contract_example() {
        let c = parse(&json!({"routes": [
            {"prefix": "ECHO", "upstreams": ["127.0.0.1:7001", "127.0.0.1:7002"]},
            {"sni": "DB.example.test", "upstreams": ["127.0.0.1:7003"]},
        ]}))
        .unwrap();
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].name, "ECHO");
        assert_eq!(c.routes[0].matcher, Match::Prefix(b"ECHO".to_vec()));
        assert_eq!(
            c.routes[0].upstreams[1].addr,
            "127.0.0.1:7002".parse().unwrap()
        );
        assert_eq!(c.routes[0].upstreams[1].weight, 1);
        assert_eq!(c.routes[0].retries, 2);
        assert_eq!(c.routes[0].balance, Balance::RoundRobin);
        assert_eq!(c.routes[1].matcher, Match::Sni("db.example.test".into()));
        assert_eq!(c.routes[1].name, "db.example.test");
        assert!(c.wants_tls());
        assert_eq!(c.default_route, None);
        assert_eq!(parse(&json!({})).unwrap().routes.len(), 0);
    }

    #[test]
    fn weights_settings_and_inheritance() {
        let c = parse(&json!({
            "balance": "least_conn", "health_interval": "2s", "proxy_protocol": "v2",
            "routes": [
                {"name": "a", "prefix": "A", "upstreams": ["127.0.0.1:1", {"addr": "127.0.0.1:2", "weight": 3}],
                 "health_interval": "500ms", "retries": 0},
                {"prefix": "B", "upstreams": ["127.0.0.1:1", "127.0.0.1:2"], "weights": [2, 5],
                 "balance": "round_robin", "proxy_protocol": "off", "fail_timeout": "0"},
            ]
        }))
        .unwrap();
        let (a, b) = (&c.routes[0], &c.routes[1]);
        assert_eq!(a.balance, Balance::LeastConn);
        assert_eq!(a.health.interval, Duration::from_millis(500));
        assert_eq!(a.proxy_protocol, ProxyProtocol::V2);
        assert_eq!(a.retries, 0);
        assert_eq!(
            a.upstreams.iter().map(|u| u.weight).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(b.balance, Balance::RoundRobin);
        assert_eq!(b.health.interval, Duration::from_secs(2));
        assert_eq!(b.proxy_protocol, ProxyProtocol::Off);
        assert_eq!(b.fail_timeout, Duration::ZERO);
        assert_eq!(
            b.upstreams.iter().map(|u| u.weight).collect::<Vec<_>>(),
            [2, 5]
        );
        assert!(!c.wants_tls());
    }

    #[test]
    fn escapes_and_defaults() {
        assert_eq!(unescape("\\x16\\x03").unwrap(), b"\x16\x03");
        assert_eq!(unescape("SSH-").unwrap(), b"SSH-");
        assert_eq!(unescape("a\\\\b").unwrap(), b"a\\b");
        assert!(unescape("\\x1").is_err());
        assert!(unescape("\\n").is_err());
        assert_eq!(escape(b"GET \x16"), "GET\\x20\\x16");

        let c = parse(&json!({"default_route": "fallback", "routes": [
            {"sni": "*.example.test", "upstreams": ["127.0.0.1:1"]},
            {"name": "fallback", "upstreams": ["127.0.0.1:2"]},
        ]}))
        .unwrap();
        assert_eq!(c.default_route, Some(1));
        assert_eq!(c.routes[1].matcher, Match::DefaultOnly);
        let c = parse(&json!({"routes": [
            {"prefix": "X", "upstreams": ["127.0.0.1:1"], "default": true},
        ]}))
        .unwrap();
        assert_eq!(c.default_route, Some(0));
        assert!(c.wants_tls());
    }

    #[test]
    fn errors_name_the_route_and_field() {
        let cases = [
            (json!({"routs": []}), "unknown key \"routs\""),
            (json!({"routes": {}}), "routes: must be an array"),
            (
                json!({"routes": [{"prefix": "A"}]}),
                "route \"A\": upstreams: missing",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": []}]}),
                "route \"A\": upstreams: must not be empty",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": ["nope"]}]}),
                "route \"A\": upstreams[0]: \"nope\": needs a port",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": ["127.0.0.1:0"]}]}),
                "port 0",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": ["127.0.0.1:1", "127.0.0.1:1"]}]}),
                "listed twice",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": [{"addr": "127.0.0.1:1", "weight": 0}]}]}),
                "route \"A\": upstreams[0]: weight: must be a whole number",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": ["127.0.0.1:1"], "weights": [1, 2]}]}),
                "route \"A\": weights: must be a list of 1",
            ),
            (
                json!({"routes": [{"prefix": "A", "sni": "a.b", "upstreams": ["127.0.0.1:1"]}]}),
                "routes[0]: has both prefix and sni",
            ),
            (
                json!({"routes": [{"sni": "a..b", "upstreams": ["127.0.0.1:1"]}]}),
                "routes[0]: sni: \"a..b\"",
            ),
            (
                json!({"routes": [{"sni": "a.*.b", "upstreams": ["127.0.0.1:1"]}]}),
                "sni",
            ),
            (
                json!({"routes": [{"prefix": "", "upstreams": ["127.0.0.1:1"]}]}),
                "prefix: must not be empty",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": ["127.0.0.1:1"], "balance": "random"}]}),
                "route \"A\": balance",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": ["127.0.0.1:1"], "health_interval": "2 parsecs"}]}),
                "route \"A\": health_interval: must be a duration",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": ["127.0.0.1:1"], "proxy_protocol": "v3"}]}),
                "route \"A\": proxy_protocol",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": ["127.0.0.1:1"], "colour": 1}]}),
                "route \"A\": unknown key \"colour\"",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": ["127.0.0.1:1"]}, {"prefix": "A", "name": "b", "upstreams": ["127.0.0.1:1"]}]}),
                "route \"b\": prefix: route \"A\" matches the same",
            ),
            (
                json!({"routes": [{"prefix": "A", "upstreams": ["127.0.0.1:1"]}, {"prefix": "B", "name": "A", "upstreams": ["127.0.0.1:1"]}]}),
                "name: used by another route",
            ),
            (
                json!({"routes": [{"upstreams": ["127.0.0.1:1"]}]}),
                "needs `prefix` or `sni`",
            ),
            (
                json!({"default_route": "x", "routes": [{"prefix": "A", "upstreams": ["127.0.0.1:1"]}]}),
                "default_route: no route is named \"x\"",
            ),
            (
                json!({"routes": [{"prefix": "A", "default": true, "upstreams": ["127.0.0.1:1"]}, {"prefix": "B", "default": true, "upstreams": ["127.0.0.1:1"]}]}),
                "route \"B\": default",
            ),
            (
                json!({"routes": [{"sni": "a.test", "upstreams": ["127.0.0.1:1"]}, {"prefix": "\\x16\\x03", "upstreams": ["127.0.0.1:1"]}]}),
                "TLS record prefix",
            ),
        ];
        for (cfg, want) in cases {
            let e = parse(&cfg).expect_err(&cfg.to_string());
            assert!(
                e.contains(want),
                "{cfg}: error {e:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            duration(&json!("250ms")).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(duration(&json!("2s")).unwrap(), Duration::from_secs(2));
        assert_eq!(duration(&json!("1m")).unwrap(), Duration::from_secs(60));
        assert_eq!(duration(&json!("0")).unwrap(), Duration::ZERO);
        assert_eq!(duration(&json!(3)).unwrap(), Duration::from_secs(3));
        assert!(duration(&json!("s")).is_err());
        assert!(duration(&json!("5 fortnights")).is_err());
        assert!(duration(&json!(-1)).is_err());
    }
}

//! The browser check shared by the two HTTP doors of the bus, the
//! WebSocket upgrade ([`crate::ws`]) and `POST /rpc` ([`crate::post`]):
//! which page a request comes from, judged from its `Origin` and `Host`
//! headers alone, and whether that page may call. A pure function of the
//! request and the `ws_origins` setting; each door renders the refusal in
//! its own protocol (a handshake refusal, a JSON-RPC error body).
//!
//! Two attacks are kept out. **Cross-site requests:** any page the user
//! opens may send a simple `POST` (no preflight) or open a WebSocket to
//! the bus, and the browser sends them with the page's `Origin`; only this
//! host's own pages and those listed in `ws_origins` may call. **DNS
//! rebinding:** in protected mode loopback peers get every right, so a
//! page on a name that an attacker's DNS later points at 127.0.0.1 would
//! pass the same-origin check (its Origin and Host agree) and reach the
//! whole bus; a page served to a peer trusted only for being on loopback
//! must therefore be on a loopback host name (`localhost`, `127.x.y.z`,
//! `[::1]`) unless its Origin is listed. Requests without `Origin` are not
//! from a browser page (curl, bots, the clients): they pass, since
//! browsers send `Origin` with every WebSocket upgrade and every `POST`.

use module_api::http::Request;
use module_api::ws::handshake;

use crate::jsonrpc::{code, RpcError};

/// Where a request comes from, as its `Origin` and `Host` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// No `Origin`: not a browser page.
    NoOrigin,
    /// An Origin listed in `ws_origins`.
    Listed,
    /// This host's own page, on a loopback host name.
    Loopback,
    /// This host's own page (Origin = Host) on a name that is not
    /// loopback: fine unless the peer is trusted for being on loopback.
    SameOrigin,
    /// Any other Origin (or one that is not text).
    Foreign,
}

/// Why a page may not call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A cross-site page ([`Page::Foreign`]).
    Origin,
    /// A page not on a loopback name, to a peer trusted for being on
    /// loopback (DNS rebinding).
    Rebinding,
}

impl Page {
    /// Judges a request's headers against `ws_origins`.
    pub fn of(req: &Request<'_, '_>, allowed: &[String]) -> Page {
        let Some(origin) = req.header("origin") else {
            return Page::NoOrigin;
        };
        if !handshake::origin_allowed(req, allowed) {
            return Page::Foreign;
        }
        let origin = String::from_utf8_lossy(origin.trim_ascii());
        if allowed.iter().any(|a| a.eq_ignore_ascii_case(&origin)) {
            return Page::Listed;
        }
        let host = req.header("host").unwrap_or_default();
        if loopback_name(&String::from_utf8_lossy(host.trim_ascii())) {
            Page::Loopback
        } else {
            Page::SameOrigin
        }
    }

    /// Whether this page may call. `loopback_trust`: the peer is served
    /// only because it is on loopback (protected mode), so the page must
    /// be on a loopback name too.
    pub fn refusal(self, loopback_trust: bool) -> Option<Refusal> {
        match self {
            Page::Foreign => Some(Refusal::Origin),
            Page::SameOrigin if loopback_trust => Some(Refusal::Rebinding),
            _ => None,
        }
    }
}

impl Refusal {
    /// The reason, for the client (the same words at both doors).
    pub fn why(self) -> &'static str {
        match self {
            Refusal::Origin => {
                "a browser page from this Origin may not call the bus: it must be served by this \
                 host or be listed in ws_origins"
            }
            Refusal::Rebinding => {
                "protected mode: a browser page must be served from localhost or a loopback \
                 address (or be listed in ws_origins)"
            }
        }
    }

    /// The JSON-RPC error (-32061, permission denied) of a `POST /rpc`
    /// answered 403.
    pub fn error(self) -> RpcError {
        RpcError::new(code::PERMISSION_DENIED, self.why())
    }
}

/// Whether a `Host` header (`name[:port]`) names this machine's loopback.
pub fn loopback_name(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use module_api::http::{self, Parsed};

    fn page(headers: &str, allowed: &[&str]) -> Page {
        let head = format!("POST /rpc HTTP/1.1\r\n{headers}\r\n");
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        let mut buf = http::empty_headers();
        match http::parse_request(head.as_bytes(), &mut buf) {
            Ok(Parsed::Complete(req)) => Page::of(&req, &allowed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pages_are_told_apart() {
        assert_eq!(page("Host: evil.test\r\n", &[]), Page::NoOrigin);
        assert_eq!(page("", &[]), Page::NoOrigin);
        let lo = "Host: 127.0.0.1:8080\r\nOrigin: http://127.0.0.1:8080\r\n";
        assert_eq!(page(lo, &[]), Page::Loopback);
        let lo = "Host: localhost:8080\r\nOrigin: https://localhost:8080\r\n";
        assert_eq!(page(lo, &[]), Page::Loopback);
        let same = "Host: rebind.test:8080\r\nOrigin: http://rebind.test:8080\r\n";
        assert_eq!(page(same, &[]), Page::SameOrigin);
        assert_eq!(page(same, &["http://rebind.test:8080"]), Page::Listed);
        let cross = "Host: 127.0.0.1:8080\r\nOrigin: http://evil.test\r\n";
        assert_eq!(page(cross, &[]), Page::Foreign);
        assert_eq!(page(cross, &["HTTP://EVIL.TEST"]), Page::Listed);
        assert_eq!(page(cross, &["http://other.test"]), Page::Foreign);
        // Another port is another origin; "null" (a sandboxed page or a
        // file) is never this host.
        let port = "Host: 127.0.0.1:8080\r\nOrigin: http://127.0.0.1:9090\r\n";
        assert_eq!(page(port, &[]), Page::Foreign);
        assert_eq!(
            page("Host: 127.0.0.1\r\nOrigin: null\r\n", &[]),
            Page::Foreign
        );
        assert_eq!(page("Origin: http://127.0.0.1\r\n", &[]), Page::Foreign);
    }

    #[test]
    fn rebinding_counts_only_for_loopback_trust() {
        assert_eq!(Page::Foreign.refusal(false), Some(Refusal::Origin));
        assert_eq!(Page::Foreign.refusal(true), Some(Refusal::Origin));
        assert_eq!(Page::SameOrigin.refusal(true), Some(Refusal::Rebinding));
        assert_eq!(Page::SameOrigin.refusal(false), None);
        for ok in [Page::NoOrigin, Page::Listed, Page::Loopback] {
            assert_eq!(ok.refusal(true), None, "{ok:?}");
        }
        assert_eq!(Refusal::Origin.error().code, code::PERMISSION_DENIED);
    }

    #[test]
    fn only_loopback_names_pass() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:80",
            "127.3.4.5",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(loopback_name(ok), "{ok}");
        }
        for bad in [
            "evil.test:8080",
            "localhost.evil.test",
            "10.0.0.1",
            "[::2]:80",
            "",
            "127.0.0.1.evil.test",
        ] {
            assert!(!loopback_name(bad), "{bad}");
        }
    }
}

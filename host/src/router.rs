//! The route table: byte prefixes bound to module generations or to the
//! host's built-in commands. Longest match wins; while the bytes seen so far
//! could still become a longer match, the router waits for more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use module_api::CallStatus;
use parking_lot::RwLock;

use crate::generation::Generation;

/// The host's own commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Reload,
    Status,
    Close,
    Shutdown,
    Upgrade,
    Auth,
    Run,
}

/// Prefixes the host binds itself. Modules may not bind these.
pub const BUILTINS: &[(&[u8], Builtin)] = &[
    (b"RELOAD", Builtin::Reload),
    (b"STATUS", Builtin::Status),
    (b"CLOSE", Builtin::Close),
    (b"SHUTDOWN", Builtin::Shutdown),
    (b"UPGRADE", Builtin::Upgrade),
    (b"AUTH", Builtin::Auth),
    (b"RUN", Builtin::Run),
];

/// Where a prefix leads.
#[derive(Clone)]
pub enum Target {
    Module(Arc<Generation>),
    Builtin(Builtin),
    /// The module is reloading exclusively or was removed: answer
    /// "unavailable" in its protocol.
    Unavailable(module_api::Protocol),
}

struct Route {
    prefix: Box<[u8]>,
    target: Target,
}

/// The outcome of matching buffered bytes.
pub enum Match<'t> {
    Found(&'t Target),
    /// The bytes are a proper prefix of a binding: read more.
    NeedMore,
    /// Nothing can match.
    None,
}

/// An immutable table; the registry builds a new one on every change.
pub struct RouteTable {
    /// Routes grouped by first byte, each group longest prefix first.
    by_first: Vec<Vec<Route>>,
    /// Each module's target by name, for connections a module keeps.
    by_name: std::collections::HashMap<Arc<str>, Target>,
}

impl RouteTable {
    /// Builds a table from `(prefix, target)` pairs and each module's
    /// target by name; the built-ins are added.
    pub fn new(
        bindings: Vec<(Vec<u8>, Target)>,
        by_name: std::collections::HashMap<Arc<str>, Target>,
    ) -> RouteTable {
        let mut by_first: Vec<Vec<Route>> = (0..256).map(|_| Vec::new()).collect();
        let builtins = BUILTINS
            .iter()
            .map(|(p, b)| (p.to_vec(), Target::Builtin(*b)));
        for (prefix, target) in builtins.chain(bindings) {
            if prefix.is_empty() {
                continue;
            }
            by_first[prefix[0] as usize].push(Route {
                prefix: prefix.into_boxed_slice(),
                target,
            });
        }
        for group in &mut by_first {
            group.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        }
        RouteTable { by_first, by_name }
    }

    /// The target of module `name` (for connections it keeps), if it is
    /// routable.
    pub fn by_name(&self, name: &str) -> Option<&Target> {
        self.by_name.get(name)
    }

    /// Finds the longest binding that `input` starts with, or says to wait
    /// when a longer binding could still match.
    ///
    /// An HTTP request line in absolute form (`GET http://host/app/x
    /// HTTP/1.1`) is matched as its origin form (`GET /app/x HTTP/1.1`):
    /// prefixes bind paths, and a client (or a proxy in front) choosing the
    /// other form of the same request must not reach another module.
    pub fn lookup(&self, input: &[u8]) -> Match<'_> {
        let Some(&first) = input.first() else {
            return Match::NeedMore;
        };
        let view = match absolute_form(input) {
            Target3::Incomplete => return Match::NeedMore,
            Target3::No => View([input, &[], &[]]),
            Target3::Path { method, path } => View([&input[..method], b"/", &input[path..]]),
            Target3::Split { method, path } => View([&input[..method], &input[path..], &[]]),
        };
        let len = view.len();
        let mut could_grow = false;
        for route in &self.by_first[first as usize] {
            let p = &route.prefix[..];
            if len >= p.len() {
                if view.starts_with(p) {
                    return if could_grow {
                        Match::NeedMore
                    } else {
                        Match::Found(&route.target)
                    };
                }
            } else if view.is_prefix_of(p) {
                could_grow = true;
            }
        }
        if could_grow {
            Match::NeedMore
        } else {
            Match::None
        }
    }
}

/// Bytes seen as the concatenation of three slices, so that an
/// absolute-form request line is matched without copying it.
struct View<'a>([&'a [u8]; 3]);

impl View<'_> {
    fn len(&self) -> usize {
        self.0.iter().map(|s| s.len()).sum()
    }

    /// Whether the view begins with `p` (the caller checked the length).
    fn starts_with(&self, mut p: &[u8]) -> bool {
        for part in self.0 {
            let n = part.len().min(p.len());
            if part[..n] != p[..n] {
                return false;
            }
            p = &p[n..];
        }
        p.is_empty()
    }

    /// Whether the whole view is a prefix of `p` (shorter than it).
    fn is_prefix_of(&self, mut p: &[u8]) -> bool {
        for part in self.0 {
            if !p.starts_with(part) {
                return false;
            }
            p = &p[part.len()..];
        }
        true
    }
}

/// What [`absolute_form`] found.
#[derive(Debug, PartialEq, Eq)]
enum Target3 {
    /// Not an absolute-form request line: match the bytes as they are.
    No,
    /// Could still become one: wait for more bytes.
    Incomplete,
    /// `input[..method]` is `METHOD SP`, the path starts at `input[path]`.
    Split { method: usize, path: usize },
    /// As `Split`, but the authority is followed by `?` or SP: the path is
    /// empty, which means `/`, and the rest starts at `input[path]`.
    Path { method: usize, path: usize },
}

/// Longest method token and scheme considered; longer ones are not HTTP.
const MAX_TOKEN: usize = 20;

/// Recognises `METHOD SP scheme "://" authority` at the start of `input`
/// (RFC 9112 absolute-form) and says where the path starts.
fn absolute_form(input: &[u8]) -> Target3 {
    let method = input
        .iter()
        .take(MAX_TOKEN + 1)
        .position(|b| !b.is_ascii_uppercase())
        .unwrap_or(input.len().min(MAX_TOKEN + 1));
    if method == 0 || method > MAX_TOKEN {
        return Target3::No;
    }
    match input.get(method) {
        None => return Target3::No, // a bare token: routed as it is
        Some(b' ') => {}
        Some(_) => return Target3::No,
    }
    let rest = &input[method + 1..];
    // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then "://".
    // An origin-form path starts with `/`, so `GET ` followed by a letter
    // can only be a scheme still arriving: wait to see it.
    let i = rest
        .iter()
        .take(MAX_TOKEN + 1)
        .enumerate()
        .take_while(|&(i, &b)| {
            b.is_ascii_alphabetic()
                || (i > 0 && (b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')))
        })
        .count();
    if i == 0 || i > MAX_TOKEN {
        return Target3::No;
    }
    if i == rest.len() {
        return Target3::Incomplete;
    }
    let sep = &rest[i..];
    let want = b"://";
    let n = sep.len().min(want.len());
    if sep[..n] != want[..n] {
        return Target3::No;
    }
    if n < want.len() {
        return Target3::Incomplete;
    }
    let authority = i + want.len();
    for (j, &b) in rest[authority..].iter().enumerate() {
        let at = method + 1 + authority + j;
        match b {
            b'/' => {
                return Target3::Split {
                    method: method + 1,
                    path: at,
                }
            }
            b'?' | b' ' => {
                return Target3::Path {
                    method: method + 1,
                    path: at,
                }
            }
            b if b.is_ascii_control() => return Target3::No,
            _ => {}
        }
    }
    Target3::Incomplete
}

/// Whether bytes that match no binding look like an HTTP request line
/// (`TOKEN` followed by a space or a tab, or `HTTP/` in the line), so that
/// the client gets `400 Bad Request` rather than a silent close.
pub fn looks_like_http(input: &[u8]) -> bool {
    let line = input.split(|&b| b == b'\n').next().unwrap_or(input);
    let token = line
        .iter()
        .take(MAX_TOKEN + 1)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    let after_token =
        (1..=MAX_TOKEN).contains(&token) && matches!(line.get(token), Some(b' ' | b'\t'));
    after_token || line.windows(5).any(|w| w == b"HTTP/")
}

/// The table shared by all event loops. Loops keep their own `Arc` and
/// re-read it only when `version` moved, so routing costs one atomic load.
///
/// It is also the directory of current generations by name: the registry
/// writes it (it is the only one that swaps tables), host services read it
/// for in-process calls, so neither needs the other.
pub struct SharedTable {
    version: AtomicU64,
    table: RwLock<Arc<RouteTable>>,
    /// Woken on every swap so that each loop drops its copy of the old
    /// table (and with it the old generations) promptly.
    wakers: Vec<Arc<mio::Waker>>,
}

impl SharedTable {
    /// A table with only the built-ins; `wakers` are the event loops'.
    pub fn new(wakers: Vec<Arc<mio::Waker>>) -> SharedTable {
        SharedTable {
            version: AtomicU64::new(1),
            table: RwLock::new(Arc::new(RouteTable::new(Vec::new(), Default::default()))),
            wakers,
        }
    }

    /// Atomically replaces the table.
    pub fn swap(&self, table: RouteTable) {
        *self.table.write() = Arc::new(table);
        self.version.fetch_add(1, Ordering::Release);
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    /// The current generation of module `name`, for a call from another
    /// module: `NoSuchModule` when no module of that name is loaded,
    /// `Unavailable` while it reloads exclusively.
    pub fn module(&self, name: &str) -> Result<Arc<Generation>, CallStatus> {
        match self.table.read().by_name(name) {
            Some(Target::Module(g)) => Ok(g.clone()),
            Some(_) => Err(CallStatus::Unavailable),
            None => Err(CallStatus::NoSuchModule),
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn current(&self) -> (u64, Arc<RouteTable>) {
        let t = self.table.read();
        (self.version(), t.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use module_api::Protocol;

    fn table(prefixes: &[&str]) -> RouteTable {
        RouteTable::new(
            prefixes
                .iter()
                .map(|p| {
                    (
                        p.as_bytes().to_vec(),
                        Target::Unavailable(if p.len() > 4 {
                            Protocol::JsonRpc
                        } else {
                            Protocol::Http
                        }),
                    )
                })
                .collect(),
            Default::default(),
        )
    }

    fn found(t: &RouteTable, input: &str) -> Option<Protocol> {
        match t.lookup(input.as_bytes()) {
            Match::Found(Target::Unavailable(p)) => Some(*p),
            _ => None,
        }
    }

    #[test]
    fn modules_by_name_for_in_process_calls() {
        let shared = SharedTable::new(Vec::new());
        assert!(matches!(shared.module("m"), Err(CallStatus::NoSuchModule)));
        let by_name = [(Arc::from("m"), Target::Unavailable(Protocol::Http))];
        shared.swap(RouteTable::new(Vec::new(), by_name.into_iter().collect()));
        assert_eq!(shared.version(), 2);
        assert!(matches!(shared.module("m"), Err(CallStatus::Unavailable)));
        assert!(matches!(shared.module("n"), Err(CallStatus::NoSuchModule)));
    }

    #[test]
    fn longest_prefix_wins_and_waits() {
        let t = table(&["GET ", "GET /app/"]);
        assert_eq!(found(&t, "GET /app/x"), Some(Protocol::JsonRpc));
        assert_eq!(found(&t, "GET /x HTTP/1.1"), Some(Protocol::Http));
        assert!(matches!(t.lookup(b"GET /ap"), Match::NeedMore));
        assert!(matches!(t.lookup(b"GE"), Match::NeedMore));
        assert!(matches!(t.lookup(b"XYZ"), Match::None));
        assert!(matches!(
            t.lookup(b"STATUS\n"),
            Match::Found(Target::Builtin(Builtin::Status))
        ));
        assert!(matches!(t.lookup(b"STAT"), Match::NeedMore));
    }

    #[test]
    fn absolute_form_routes_by_path() {
        let t = table(&["GET ", "GET /app/"]);
        let app = Some(Protocol::JsonRpc);
        let site = Some(Protocol::Http);
        assert_eq!(found(&t, "GET http://x/app/api/messages HTTP/1.1"), app);
        assert_eq!(found(&t, "GET https://a.b:8080/app/ HTTP/1.1"), app);
        assert_eq!(found(&t, "GET http://x/index.html HTTP/1.1"), site);
        assert_eq!(found(&t, "GET http://x HTTP/1.1\r\n"), site);
        assert_eq!(found(&t, "GET http://x?q=1 HTTP/1.1\r\n"), site);
        // Still arriving: wait rather than guess.
        for partial in [
            "GET h",
            "GET http",
            "GET http:/",
            "GET http://x",
            "GET http://x/ap",
        ] {
            assert!(
                matches!(t.lookup(partial.as_bytes()), Match::NeedMore),
                "{partial}"
            );
        }
        // Origin form as before.
        assert_eq!(found(&t, "GET /app/x HTTP/1.1"), app);
        // Not a scheme: routed as the bytes are.
        assert_eq!(found(&t, "GET foo bar"), site);
        assert_eq!(found(&t, "GET http:x"), site);
    }

    #[test]
    fn absolute_form_recogniser() {
        assert_eq!(absolute_form(b"GET /x"), Target3::No);
        assert_eq!(absolute_form(b"{\"jsonrpc\""), Target3::No);
        assert_eq!(absolute_form(b"SSH-2.0"), Target3::No);
        assert_eq!(absolute_form(b"GET"), Target3::No);
        assert_eq!(absolute_form(b"GET "), Target3::No);
        assert_eq!(absolute_form(b"GET ht"), Target3::Incomplete);
        assert_eq!(
            absolute_form(b"GET http://h/p"),
            Target3::Split {
                method: 4,
                path: 12
            }
        );
        assert_eq!(
            absolute_form(b"GET http://h HTTP/1.1"),
            Target3::Path {
                method: 4,
                path: 12
            }
        );
        assert_eq!(absolute_form(b"GET http://h\r\n"), Target3::No);
        let long = format!("GET {}://x/", "a".repeat(40));
        assert_eq!(absolute_form(long.as_bytes()), Target3::No);
    }

    #[test]
    fn http_lookalikes() {
        assert!(looks_like_http(b"GET\t/ HTTP/1.1\r\n"));
        assert!(looks_like_http(b"BREW /pot HTTP/1.1\r\n"));
        assert!(looks_like_http(b"get / HTTP/1.1\r\n"));
        assert!(!looks_like_http(b"hello\n"));
        assert!(!looks_like_http(b"\x00\x01\x02"));
    }
}

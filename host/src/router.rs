//! The route table: byte prefixes bound to module generations or to the
//! host's built-in commands. Longest match wins; while the bytes seen so far
//! could still become a longer match, the router waits for more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::registry::Generation;

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
    pub fn lookup(&self, input: &[u8]) -> Match<'_> {
        let Some(&first) = input.first() else {
            return Match::NeedMore;
        };
        let mut could_grow = false;
        for route in &self.by_first[first as usize] {
            let p = &route.prefix[..];
            if input.len() >= p.len() {
                if input.starts_with(p) {
                    return if could_grow {
                        Match::NeedMore
                    } else {
                        Match::Found(&route.target)
                    };
                }
            } else if p.starts_with(input) {
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

/// The table shared by all event loops. Loops keep their own `Arc` and
/// re-read it only when `version` moved, so routing costs one atomic load.
pub struct SharedTable {
    version: AtomicU64,
    table: RwLock<Arc<RouteTable>>,
    /// Woken on every swap so that each loop drops its copy of the old
    /// table (and with it the old generations) promptly.
    wakers: RwLock<Vec<Arc<mio::Waker>>>,
}

impl SharedTable {
    pub fn new(table: RouteTable) -> SharedTable {
        SharedTable {
            version: AtomicU64::new(1),
            table: RwLock::new(Arc::new(table)),
            wakers: RwLock::new(Vec::new()),
        }
    }

    /// Sets the event loops' wakers.
    pub fn set_wakers(&self, wakers: Vec<Arc<mio::Waker>>) {
        *self.wakers.write() = wakers;
    }

    /// Atomically replaces the table.
    pub fn swap(&self, table: RouteTable) {
        *self.table.write() = Arc::new(table);
        self.version.fetch_add(1, Ordering::Release);
        for w in self.wakers.read().iter() {
            let _ = w.wake();
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
}

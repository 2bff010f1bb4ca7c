//! The method table: every method's name, its [`Method`] and the
//! one-line description `sys.methods` returns, and what each needs (may
//! it be called before logging in, does it write). A leaf: it imports
//! nothing from the crate.

/// Every method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SysPing,
    SysMethods,
    SysVersion,
    KvGet,
    KvSet,
    KvDel,
    KvIncr,
    KvCas,
    KvKeys,
    BusSubscribe,
    BusUnsubscribe,
    BusPublish,
    SysAuth,
    SysWhoami,
}

/// Name, method and one-line description (what `sys.methods` returns).
pub const METHODS: &[(&str, Method, &str)] = &[
    ("bus.publish", Method::BusPublish, "publish {topic, data} to the subscribers of topic; returns how many got it"),
    ("bus.subscribe", Method::BusSubscribe, "subscribe this raw TCP connection to {topics} (\"*\" matches one dot-separated segment); messages arrive as bus.message notifications; returns this connection's subscription count"),
    ("bus.unsubscribe", Method::BusUnsubscribe, "drop {topics} (all when omitted) from this connection; returns the subscriptions left"),
    ("kv.cas", Method::KvCas, "compare-and-set {key, expected, value, ttl_ms?}: set value if the current value equals expected (null: the key is absent; value null deletes); returns true if it did"),
    ("kv.del", Method::KvDel, "delete {key}; returns true if the key existed"),
    ("kv.get", Method::KvGet, "the value of {key}, or null when absent or expired"),
    ("kv.incr", Method::KvIncr, "atomically add {by} (default 1) to the 64-bit integer at {key} (absent: 0); returns the new value"),
    ("kv.keys", Method::KvKeys, "up to {limit} (default 100) keys starting with {prefix}, sorted, after the key {after} if given; a full page may have more (call again with after = its last key); when max_keys_scan rows were examined first, {keys, cursor} instead: call again with {cursor} to go on"),
    ("kv.set", Method::KvSet, "set {key} to the JSON {value} (not null), expiring after {ttl_ms} if given; returns true once durable"),
    ("sys.auth", Method::SysAuth, "log this raw TCP connection in: {token, user?}; returns {user}. Over HTTP it only checks the token (send Authorization: Bearer on each request)"),
    ("sys.methods", Method::SysMethods, "these method names with a one-line description each"),
    ("sys.ping", Method::SysPing, "returns \"pong\""),
    ("sys.version", Method::SysVersion, "the module's name and version and the protocol version"),
    ("sys.whoami", Method::SysWhoami, "{user, auth, permissions}: who this connection acts as, how it was authenticated (token, cert, no_auth_user, loopback, internal) and what it may do"),
];

impl Method {
    pub fn lookup(name: &str) -> Option<Method> {
        METHODS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, m, _)| *m)
    }

    /// Whether the method may be called before logging in.
    pub fn open(self) -> bool {
        matches!(
            self,
            Method::SysPing
                | Method::SysVersion
                | Method::SysMethods
                | Method::SysAuth
                | Method::SysWhoami
        )
    }

    /// Whether the method changes stored data (and so goes through the
    /// writer and waits for a commit).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Method::KvSet | Method::KvDel | Method::KvIncr | Method::KvCas
        )
    }
}

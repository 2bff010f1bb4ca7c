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
    BusRequest,
    BusReply,
    BusPresence,
    KvWatch,
    KvUnwatch,
    StreamCreate,
    StreamDelete,
    StreamInfo,
    StreamList,
    StreamPublish,
    StreamConsume,
    StreamUnconsume,
    StreamAck,
    StreamNak,
    StreamFetch,
    ConsumerInfo,
    ConsumerDelete,
}

/// Name, method and one-line description (what `sys.methods` returns).
pub const METHODS: &[(&str, Method, &str)] = &[
    ("bus.publish", Method::BusPublish, "publish {topic, data} to the subscribers of topic; returns how many got it"),
    ("bus.presence", Method::BusPresence, "{subscribers, queues}: how many connections are subscribed where a message on {topic} (a subject or a pattern) could reach them, and the members of each queue group"),
    ("bus.reply", Method::BusReply, "answer a request: send {data} to its {reply} address (from the bus.message it came in); returns true if the requester still waited"),
    ("bus.request", Method::BusRequest, "send {data} on {topic} with a reply subject (like a publish: every plain subscriber, one member per queue group) and return the first answer (bus.reply) as this call's result, possibly after the replies to later lines; fails at once with -32032 when nobody listens, with -32033 after {timeout_ms} (default 5000); not in a batch"),
    ("bus.subscribe", Method::BusSubscribe, "subscribe this connection to {topics} (\"*\" matches one dot-separated segment, a last \">\" one or more), in queue group {queue} if given (each message goes to one member of a group); messages arrive as bus.message notifications; returns this connection's subscription count"),
    ("bus.unsubscribe", Method::BusUnsubscribe, "drop {topics} (all when omitted) from this connection, or with {queue} leave that queue group (on topics, or on all); returns the subscriptions left"),
    ("consumer.delete", Method::ConsumerDelete, "delete the durable {consumer} of {stream} and its position"),
    ("consumer.info", Method::ConsumerInfo, "the config and state (acknowledged floor, pending, members) of {consumer} on {stream}"),
    ("kv.cas", Method::KvCas, "compare-and-set {key, expected | revision, value, ttl_ms?, meta?}: set value if the current value equals expected (null: the key is absent), or if the key's revision is revision (0: absent); value null deletes; returns true if it did (with meta: {revision} or false)"),
    ("kv.del", Method::KvDel, "delete {key}; returns true if the key existed"),
    ("kv.get", Method::KvGet, "the value of {key}, or null when absent or expired; with {meta: true}: {value, revision, expires_in_ms}"),
    ("kv.incr", Method::KvIncr, "atomically add {by} (default 1) to the 64-bit integer at {key} (absent: 0); returns the new value"),
    ("kv.keys", Method::KvKeys, "up to {limit} (default 100) keys starting with {prefix}, sorted, after the key {after} if given; a full page may have more (call again with after = its last key); when max_keys_scan rows were examined first, {keys, cursor} instead: call again with {cursor} to go on"),
    ("kv.set", Method::KvSet, "set {key} to the JSON {value} (not null), expiring after {ttl_ms} if given; returns true once durable (with {meta: true}: {revision})"),
    ("kv.unwatch", Method::KvUnwatch, "stop the watch {watch}; returns true if it existed"),
    ("kv.watch", Method::KvWatch, "notify this connection of every set, delete and expiry of keys starting with {prefix} or matching {pattern}, as kv.event notifications with the new revision; with {initial: true} first the current values, then {op: ready}; returns the watch id"),
    ("stream.ack", Method::StreamAck, "acknowledge {seq} (or {seqs}) for {consumer} on {stream}: it is not delivered again"),
    ("stream.consume", Method::StreamConsume, "attach this connection to the durable {consumer} of {stream} (created if absent, delivering from {deliver}: all, new, last or {seq}); messages arrive as stream.message notifications until acknowledged"),
    ("stream.create", Method::StreamCreate, "create the durable stream {name} over {subjects} with limits {max_msgs, max_bytes, max_age_ms, max_msg_bytes, discard}; publishing to a covered subject stores the message"),
    ("stream.delete", Method::StreamDelete, "delete the stream {name}, its messages and its consumers"),
    ("stream.fetch", Method::StreamFetch, "up to {batch} messages for {consumer} on {stream}, available now, as stream.message params (the pull form, for HTTP); they are pending until acknowledged"),
    ("stream.info", Method::StreamInfo, "the config and state (messages, bytes, first and last sequence, consumers) of the stream {name}"),
    ("stream.list", Method::StreamList, "the streams this caller may see, with their subjects and state"),
    ("stream.nak", Method::StreamNak, "give {seq} back for {consumer} on {stream}: delivered again after {delay_ms} (default at once)"),
    ("stream.publish", Method::StreamPublish, "publish {data} on {topic} and return {stream, seq} once it is stored in the stream covering it"),
    ("stream.unconsume", Method::StreamUnconsume, "detach this connection from {consumer} on {stream}; unacknowledged messages go to the other members"),
    ("sys.auth", Method::SysAuth, "log this connection (raw TCP or WebSocket) in: {token, user?}; returns {user}. Over HTTP it only checks the token (send Authorization: Bearer on each request)"),
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
            Method::KvSet
                | Method::KvDel
                | Method::KvIncr
                | Method::KvCas
                // Evaluated in the writer so that a watch starts exactly
                // after the writes before it (it writes nothing).
                | Method::KvWatch
                // Streams: their state is the writer's (see crate::streams).
                | Method::StreamCreate
                | Method::StreamDelete
                | Method::StreamInfo
                | Method::StreamList
                | Method::StreamPublish
                | Method::StreamConsume
                | Method::StreamUnconsume
                | Method::StreamAck
                | Method::StreamNak
                | Method::StreamFetch
                | Method::ConsumerInfo
                | Method::ConsumerDelete
        )
    }
}

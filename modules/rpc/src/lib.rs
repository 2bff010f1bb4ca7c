//! `rpc`: Switchyard's JSON-RPC 2.0 service bus — a durable shared
//! key-value store and publish/subscribe for bots and apps.
//!
//! # Transports
//!
//! * **Raw TCP.** A connection whose first byte is `{` or `[` speaks
//!   newline-delimited JSON-RPC: one request or batch per line, one reply
//!   line per message that has one, in order; notifications get none.
//!   Requests may be pipelined (many in flight). The connection stays with
//!   this module for all its following lines, including malformed ones.
//!   `printf '{"jsonrpc":"2.0","method":"sys.ping","id":1}\n' | nc 127.0.0.1 8080`
//! * **HTTP.** `POST /rpc` with a single request or a batch as the body and
//!   `Content-Type: application/json`; see [`post`].
//! * **WebSocket.** `GET /rpc/ws` (RFC 6455): one JSON-RPC message per
//!   text frame each way, pushes included; see [`ws`] for the handshake's
//!   checks (a browser `Origin` must be this host or in `ws_origins`),
//!   logins (`Authorization: Bearer` at the upgrade, or `sys.auth`) and
//!   close codes. `static_html/bus/` is a small page that uses it.
//! * **In-process.** Another module may call
//!   `host.call("rpc", b"{...}\n")` from a pool thread or a job: lines (or
//!   a `POST /rpc` request) in, replies out, no subscriptions.
//!
//! A message may arrive in pieces. A raw line still arriving stays in the
//! host's buffer (bounded by `[server] max_message_size` and cut by its
//! message timeout, `header_timeout_ms`); the module consumes complete
//! lines only and searches each byte for a newline once ([`raw`]). The
//! start of an HTTP request is kept by [`post`] until the rest is there.
//! Pipelined replies stop at the host's output budget
//! ([`module_api::ConnInfo::out_full`]): the module answers no further
//! line until the client has read.
//!
//! # Methods
//!
//! `sys.ping`, `sys.methods`, `sys.version`, `sys.auth`, `sys.whoami`;
//! `kv.get`, `kv.set` (optional `ttl_ms`), `kv.del`, `kv.incr`, `kv.cas`,
//! `kv.keys`; `bus.subscribe`, `bus.unsubscribe`, `bus.publish`.
//! [`methods::METHODS`] describes each
//! (and `sys.methods` returns those descriptions). Values are any JSON
//! value except `null`, which stands for "no value". Expired keys vanish
//! from reads at once and are purged from the cache and disk in the
//! background (`purge_interval_ms`).
//!
//! `kv.keys` pages: a page of `limit` keys may have more (call again with
//! `after` set to its last key); a shorter array is the end. One call
//! examines at most `max_keys_scan` rows (10 × `max_keys_limit` by
//! default), keys the caller may not read included, and for a user only
//! the key ranges its `kv_read` allow patterns can match (their literal
//! starts, e.g. `bot1.` for `bot1.*`) are scanned. A call the cap stops
//! before its page is full answers `{"keys": [...], "cursor": "..."}`
//! instead of the array: call again with `cursor` (in place of `after`,
//! same `prefix`) to go on. The cursor is sealed (encrypted and
//! authenticated), so it names no key the caller may not read; it is
//! valid until the next reload (then -32602: list again).
//!
//! # Request/reply and queue groups
//!
//! Subjects are dot-separated tokens without whitespace or control
//! characters; patterns add `*` (one token) and a last `>` (one or more).
//! `bus.subscribe {topics, queue}` joins the queue group `queue` (1 to 64
//! letters, digits, `_-.`): each message goes to every plain subscriber
//! and to ONE member of each queue name among the matching subscriptions,
//! round robin (as in NATS, members of one name under different matching
//! patterns form one group). A connection gets at most one copy of a
//! message. Queue subscriptions count against `max_subscriptions`.
//! `bus.unsubscribe {queue}` leaves the group (on `topics`, or all).
//! Nothing is redelivered when a member leaves or closes: use streams for
//! at-least-once delivery.
//!
//! `bus.request {topic, data, timeout_ms = 5000}` sends a `bus.message`
//! with `"reply":"_INBOX.<random>"` (as a publish does: every plain
//! subscriber, one member per queue group) and answers with the first
//! `bus.reply {reply, data}` (or `bus.publish` to the reply subject): its
//! `data` is the call's `result`. No recipient: -32032 at once; no answer
//! in `timeout_ms` (at most `max_request_timeout_ms`): -32033. The reply
//! line may come after the replies to later lines: match replies by `id`
//! (the one exception to "in order"). `bus.request` is refused in a batch
//! and as a notification (-32602). The reply subject is a random 128-bit
//! capability for one answer: answering needs no `publish` right, and
//! once answered (or timed out, or its requester closed) it is an
//! ordinary subject again and `bus.reply` returns `false`. Waiting
//! requests: `max_pending_requests` per connection and
//! `max_pending_requests_total` in all (-32050). Over `POST /rpc` the
//! request waits on a pool thread: at most `max_http_waiters` at once
//! (-32050 beyond; raise it only together with `-threads`, or the waiters
//! can take the whole pool). Raw connections' waiting requests survive
//! `RELOAD rpc` (their timers move with them); HTTP waiters stay with the
//! old generation and time out there.
//!
//! `bus.presence {topic}` (a subject or a pattern; needs `subscribe` on
//! it) counts the connections that could receive a message on it:
//! `{"subscribers": plain, "queues": {"name": members}}`; a pattern walks
//! at most 10,000 subscription nodes, past which `"partial": true`.
//! `STATUS` shows `pending_requests`, `answered_requests`,
//! `request_timeouts` and `late_replies`.
//!
//! # Limits
//!
//! A write that would pass one of these is answered with -32050, whose
//! message names the limit and its value (`kv.set: value of 2000000 bytes
//! exceeds max_value_bytes (1048576)`), and writes nothing; the other
//! calls of a batch are not affected. Keys are at most `max_key_bytes`
//! (-32602 otherwise); a value's stored JSON text at most
//! `max_value_bytes`; the store holds at most `max_keys` keys and
//! `max_total_bytes` bytes of keys plus values plus stream messages (keys
//! that expired count until purged). Overwrites that do not grow the store and deletes are
//! always accepted, so a store at its limit can be cleaned up. The totals
//! are kept in the database, changed in the same transaction as the rows
//! they count: exact after a crash, and read at start without a scan.
//!
//! Subscribers on raw TCP receive
//! `{"jsonrpc":"2.0","method":"bus.message","params":{"topic":…,"data":…}}`
//! lines pushed on their connection. `*` in a pattern matches exactly one
//! dot-separated segment, and a last segment `>` one or more ([`bus`]); a
//! subscriber whose patterns overlap gets each message once. A publish
//! costs a walk of the topic's segments, whatever the number of other
//! patterns, and its message is built once and handed to the host for all
//! recipients together ([`module_api::Host::push_many`]). A slow
//! subscriber's unsent output is bounded by the host's
//! `[server] max_push_backlog` (1 MiB by default): beyond it the host
//! writes [`OVERFLOW_NOTICE`] and disconnects it. The publisher never
//! waits.
//!
//! # Errors
//!
//! | code | meaning |
//! | --- | --- |
//! | -32700 | parse error: the line is not JSON |
//! | -32600 | invalid request: not a request object, empty or oversized batch |
//! | -32601 | method not found |
//! | -32602 | invalid params (unknown or missing names, bad types, limits) |
//! | -32603 | internal error (a bug; counted as a fault) |
//! | -32001 | service unavailable, retry: the module is being removed or a reload could not hand over in time |
//! | -32010 | `kv.incr` on a value that is not a 64-bit integer |
//! | -32011 | `kv.incr` would overflow |
//! | -32020 | storage error: the batch could not be committed, nothing was written |
//! | -32030 | a method that pushes to its connection (`bus.subscribe`, `kv.watch`, `stream.consume`, ...) called without one (over `POST /rpc` or in-process) |
//! | -32031 | too many subscriptions: on this connection (`max_subscriptions`) or on the server (`max_subscriptions_total`) |
//! | -32040 | line over `max_line_bytes` (its line ending included); the connection is closed after this reply |
//! | -32050 | a kv limit (`max_value_bytes`, `max_keys`, `max_total_bytes`); nothing was written |
//! | -32060 | authentication required: the method needs a logged-in user, or the bus is in protected mode and the peer is not loopback (the message says how to configure users) |
//! | -32061 | permission denied; the message names the method, the key or subject, and the user; also the body of a `POST /rpc` refused 403 for its browser `Origin` ([`access::browser`]) |
//! | -32062 | authentication failed: a wrong token (or user name); while the address is paused after failures, the message gives the wait |
//! | -32063 | a per-user limit: `max_connections` (the connection stays as it was) or `requests_per_second` |
//!
//! A malformed line gets its error reply and nothing else happens: earlier
//! and later requests on the connection are answered normally. Only a line
//! over the size limit closes the connection.
//!
//! # Access control
//!
//! ([`access`]) **Protected mode.** While no users are configured the bus
//! serves loopback peers (127.0.0.0/8, `::1`, IPv4-mapped loopback) and
//! in-process calls only, like Redis's protected mode. A connection from
//! an upstream socket of this same server (a proxy route pointing back at
//! our own port, [`module_api::ConnInfo::self_forwarded`]) is not loopback
//! whatever its address: the client behind it is remote (`sys.whoami`
//! never says `loopback` for it). Any other peer gets
//! -32060 for every call (raw TCP: each line is answered, and the
//! connection stays open so the client reads why; `POST /rpc`: 403).
//! A fresh server bound to `0.0.0.0` so exposes no open bus. `STATUS`
//! shows `users=<n> logged_in=<n>`, and `protected=1` while there are no
//! users.
//!
//! **Users** (the NATS model), in `[[modules.rpc.users]]`:
//!
//! ```toml
//! [[modules.rpc.users]]
//! name = "bot1"
//! token_hash = "sha256:<64 lowercase hex of SHA-256 of the token>"  # switchyard --new-token
//! certs = ["bot1.example.org"]   # client-certificate names (CN or SAN) that log in as bot1
//! max_connections = 10           # raw TCP connections logged in at once (0/absent: no limit)
//! requests_per_second = 200      # token bucket, burst one second's worth (0/absent: no limit)
//! [modules.rpc.users.permissions]
//! kv_read = ["bot1.>", "shared.*"]          # or { allow = [...], deny = [...] }
//! kv_write = ["bot1.>"]
//! publish = ["bot1.>"]
//! subscribe = ["events.>", "bot1.>"]
//! stream_admin = ["BOT1_JOBS"]            # streams it may create and delete ("*": any; default: none)
//! ```
//!
//! With users, every connection except in-process calls acts as a user
//! before it may call anything but `sys.ping`, `sys.version`,
//! `sys.methods`, `sys.auth` and `sys.whoami` (-32060): raw TCP sends
//! `{"method":"sys.auth","params":{"token":"…"}}` (optional `"user"`,
//! checked too) once and gets `{"user":"bot1"}`; HTTP sends
//! `Authorization: Bearer <token>` on every `POST /rpc` (none: 401 with
//! `WWW-Authenticate: Bearer realm="switchyard"`; wrong: 401); a
//! connection whose verified client certificate (the host's mutual TLS)
//! names a user in its `certs` is that user with no token (asked once per
//! raw connection; per request over HTTP); otherwise `no_auth_user`, if
//! set, applies. `sys.whoami` says who and how (`token`, `cert`,
//! `no_auth_user`, `loopback`, `internal`) and lists the permissions.
//! Loopback peers log in like everyone else once users exist.
//!
//! Permissions use the bus's patterns on keys and subjects alike (`*` one
//! dot-separated segment, a last `>` one or more); deny wins over allow,
//! and an absent list allows nothing. The right each method needs on its
//! key or subject:
//!
//! | method | needs |
//! | --- | --- |
//! | `kv.get`, `kv.keys` | `kv_read` (`kv.keys` lists only readable keys) |
//! | `kv.set` | `kv_write` |
//! | `kv.del`, `kv.incr`, `kv.cas` | `kv_write` **and** `kv_read`: their answers reveal what is stored (`kv.del` whether the key existed, `kv.incr` the value, `kv.cas` whether a guess was right); the denial names the missing right |
//! | `bus.publish` | `publish` |
//! | `bus.subscribe` | a `subscribe` pattern that *covers* the requested one (`events.>` covers `events.a.*`) and no denied pattern it overlaps (it could receive a denied subject) |
//! | `bus.unsubscribe`, `sys.*` | nothing |
//!
//! In a batch each call is checked on its own.
//!
//! A login costs one SHA-256 and a constant-time compare with each user's
//! hash; nothing blocks. A failed login outside a pause is logged at warn
//! with the peer (never the token) and pauses its address: the IPv4
//! address, or the IPv6 /64 (`auth_backoff_ms`, doubling up to
//! `auth_backoff_max_ms`, at most `auth_backoff_peers` addresses
//! remembered). During the pause a token from that address (`sys.auth`
//! or `Authorization: Bearer`) is still checked, so one guesser behind a
//! shared address (a NAT, a local TLS terminator) does not lock out the
//! clients that know their token: a correct one is accepted as usual; a
//! wrong one is refused with -32062 and the wait (HTTP 401), logged at
//! debug only (a flood cannot flood the log), and does not extend the
//! pause. Every failed `sys.auth`, paused or not, counts toward its
//! connection's `max_auth_failures`, after which the connection is
//! answered and closed (logged at info). Limits per user count across
//! its connections; `requests_per_second` counts every call (each call of
//! a batch), and the bucket starts full again after a reload.
//!
//! **Reload.** A config change starts a new generation with the new
//! table. The old one hands each raw connection's login over; the new one
//! resolves it at once: a token login survives if its user still exists
//! with the same `token_hash` (a rotated token logs the connection out),
//! certificate and `no_auth_user` logins are made again, changed
//! permissions apply to the next call, and subscriptions the connection
//! may no longer hold are dropped, each announced with a pushed
//! `{"jsonrpc":"2.0","method":"bus.revoked","params":{"pattern":…}}` and
//! logged. Messages a frozen generation forwards carry the connection's
//! id and address and are authorized as that connection. A users table
//! that does not check out (a duplicate name, a bad hash, a bad pattern,
//! an unknown `no_auth_user`, two users claiming one certificate name)
//! fails the start with a message naming the user: `RELOAD` answers
//! `ERR` and the running generation serves on at once.
//!
//! # Durability
//!
//! The data lives in SQLite (WAL mode) at `<data dir>/rpc/rpc.sqlite`; a
//! bounded cache holds recently used values for reads ([`store`]). A
//! single writer thread ([`writer`]) commits all
//! writes that queued up while the previous commit ran as one transaction
//! (group commit), and a write is acknowledged only after the transaction
//! holding it has committed; readers see a write only from then on, so a
//! read never returns a value that a crash could take back. Under load the
//! writer lets writes gather for `commit_delay_us` before committing (only
//! when the previous batch held several connections' writes). What
//! "committed" survives depends on `sync`:
//!
//! * `sync = "normal"` (default): `synchronous=NORMAL`. A commit has been
//!   written to the operating system before its writes are acknowledged.
//!   **Every acknowledged write survives a crash of the server process**
//!   (`kill -9`, abort, OOM kill). After an OS crash or power loss the
//!   database is intact but may lack the writes acknowledged since the
//!   last WAL checkpoint, which runs every `checkpoint_interval_ms` (1 s)
//!   while there are writes — about Redis's `appendfsync everysec`.
//! * `sync = "full"`: `synchronous=FULL`. Every commit is fsynced before any
//!   write in it is acknowledged: acknowledged writes survive power loss
//!   too (on storage that honours fsync). One fsync per batch, shared by
//!   every write in it.
//!
//! A commit appends the batch's key changes to a write log (the
//! `kv_log` table, same transaction and durability); a fold thread
//! (`rpc-fold`, its own connection) moves them into the key table in key
//! order, in short transactions taken in turn with the writer's, once
//! the log holds 16384 keys or 8 MiB, is 500 ms old, or the writer has
//! been idle for 20 ms ([`kv_log`], [`db`]). Reads see the log's changes
//! at once; a reload's handover and a clean stop fold everything, and
//! opening the database folds what a crash left. The unfolded changes
//! are held in memory besides `cache_bytes`: at most the fold limits, or
//! four times them while folds fail (then commits wait for the fold, and
//! are refused with -32020 if it keeps failing). Random-key writes so cost the writer a few
//! appended pages per batch instead of a rewritten b-tree page per key,
//! and the b-tree work runs on another core.
//!
//! Waiting for a commit is not a hang: pool threads wait for the writer
//! inside `Host::wait`, so a burst of big `sync = "full"` writes does not
//! reach `[server] hang_kill_ms`.
//!
//! Deleted and expired data is given back to the file system: the
//! database uses incremental auto-vacuum, and between batches the writer
//! frees up to `vacuum_step_pages` pages per step (one short transaction,
//! so writes are not held up), then truncates the WAL once idle for a
//! `checkpoint_interval_ms`. A database made by an older version is
//! converted once at start (logged; about as long as copying the file).
//!
//! # Durable streams
//!
//! ([`streams`]) JetStream-like streams on the same SQLite database.
//! `stream.create {name, subjects, max_msgs?, max_bytes?, max_age_ms?,
//! max_msg_bytes?, discard?}` makes a stream over subjects that no other
//! stream's overlap (-32036); every `bus.publish` or `stream.publish` to a
//! covered subject is stored in the writer's group commit, durable before
//! the reply, and still delivered live to subscribers after the commit
//! (`bus.request`'s message is not stored). Limits: `max_msgs` and
//! `max_bytes` (-1: none) drop the oldest messages (`discard = "old"`) or
//! refuse the new one with -32050 naming the limit (`"new"`);
//! `max_age_ms` (0: none) is enforced between batches; `max_msg_bytes`
//! defaults to `max_value_bytes`; a stream's bytes count against
//! `max_total_bytes`. Names are `[A-Za-z0-9_-]{1,64}`.
//!
//! A durable consumer (`stream.consume {stream, consumer, deliver?,
//! filter?, ack_wait_ms?, max_deliver?, max_ack_pending?}`) is created on
//! first use and attaches the calling raw connection as a member; the
//! members of a consumer split its messages round robin, with
//! `max_ack_pending` shared. Messages arrive as `stream.message`
//! notifications and are delivered again after `ack_wait_ms` unless
//! acknowledged (`stream.ack`), at once after `stream.nak` or when their
//! member leaves, and dropped after `max_deliver` deliveries.
//! `stream.fetch` is the pull form for `POST /rpc`. Only acknowledgements
//! are stored (a floor plus the acknowledged sequences above it): after a
//! restart every unacknowledged message is delivered again and no
//! acknowledged one; a reload hands the deliveries over, so it delivers
//! nothing twice. `stream.create`/`delete` and `consumer.delete` need the
//! `stream_admin` right (a rule over stream names; users have none by
//! default) plus Publish and Subscribe on the subjects created; reading a
//! consumer needs Subscribe on its filter or on all the stream's subjects.
//! # Revisions and watches
//!
//! Every set, delete, `kv.incr`, `kv.cas` and expiry takes the next value
//! of one counter per store (persisted with the data, as the sequence of
//! a NATS KV bucket), and a key remembers the revision that wrote it:
//! `kv.get {key, meta: true}` answers `{value, revision, expires_in_ms}`,
//! `kv.set`/`kv.cas` with `meta` answer `{revision}`, and
//! `kv.cas {key, revision, value}` writes only if the key is still at that
//! revision (`revision: 0`: only if it does not exist).
//!
//! `kv.watch {prefix | pattern, initial?}` (raw TCP and WebSocket
//! connections) answers a watch id; from then on the connection gets
//! `kv.event {watch, key, op: set|del|expire, revision, value?}` for every
//! change it may read (`kv_read` is checked per key; a watch where the
//! caller may read nothing is refused with -32061). Events are sent by the
//! writer after the change committed, in revision order. An expiry is
//! reported when the purge removes the key, so up to `purge_interval_ms`
//! after its TTL ran out. With `initial: true` the current values come
//! first as `set` events, then `{watch, op: "ready"}`; a notification may
//! reach the connection before the reply to `kv.watch` itself (match it
//! by the watch id once the reply is in). `kv.unwatch {watch}` stops one
//! (an event already on its way may still follow its reply); closing the
//! connection stops all; `RELOAD rpc` keeps them. Limits:
//! `max_watches` per connection, `max_watches_total` in all (-32050).
//! While nobody watches, writes pay nothing for the feature.
//!
//! # Reload
//!
//! `overlap`, with state handoff ([`handoff`]): `RELOAD rpc` fails no
//! request. The old generation freezes, finishes what is queued, and hands
//! its subscriptions and connection state to the new one, then forwards
//! whatever still reaches it. Subscribers stay subscribed on the same
//! connections, pending calls complete, and nobody sees -32001.
//! Exclusive mode would have been simpler but makes every client retry
//! (and the host closes kept connections that send during the reload, so
//! subscribers would have to resubscribe); the handoff costs a short pause
//! instead.
//!
//! # One owner per database
//!
//! The cache is right only while one writer changes the database, so a
//! generation serves only while it holds an exclusive lock on
//! `<db>.lock` ([`owner`]). A reload passes the lock to the successor. A
//! process that finds it taken — the new worker of an `UPGRADE` while the
//! old one drains, or a second server started on the same data directory
//! — starts in *standby*: its requests wait (up to `handoff_timeout_ms`,
//! then -32001) until the owner exits, then it opens the database and
//! serves. `STATUS` shows `standby=1` meanwhile.
//!
//! # Memory
//!
//! Values live in SQLite; memory holds at most `cache_bytes` of them (and
//! of keys known to be absent), plus SQLite's page cache (16 MiB). Start-up
//! reads no value: a worker over a 1 GiB database answers its first
//! request in a fraction of a second. A read of a cached key is answered
//! on the event loop; any other read (and every `kv.keys`, which lists
//! from SQLite) goes to the writer, which reads SQLite, answers, and
//! caches what it read. Only the writer changes the cache — with what it
//! read, and with each batch once it committed — so a read can never
//! bring back a value older than a committed write. A value over 1/8 of
//! `cache_bytes` is never cached.
//!
//! Per connection: at most one submission in the writer (the host does
//! not read from a connection while its writes commit): one line that
//! needs the writer and the writing lines right after it, cut so that
//! their replies fit the host's output budget (a read that misses the
//! cache goes alone, its reply bounded by `max_value_bytes`), and the
//! start of an HTTP request up to `max_line_bytes`; raw lines still
//! arriving are the host's. Subscriptions: `max_subscriptions` patterns
//! per connection, `max_subscriptions_total` in all. A batch's reply is
//! capped at
//! 8 × `max_line_bytes` (later calls in it get -32040).
//!
//! # Config (`[modules.rpc]`, every key optional)
//!
//! ```toml
//! db = "rpc.sqlite"              # relative to the module's data directory
//! sync = "normal"                # or "full" (see Durability)
//! max_line_bytes = 1048576       # a longer line, newline included: -32040 and close (keep <= [server] max_message_size)
//! max_batch = 1000               # requests per batch
//! max_key_bytes = 1024
//! max_value_bytes = 1048576      # stored JSON text of one value (<= max_line_bytes; default: the smaller)
//! max_keys = 1000000             # keys in the store (-32050 beyond)
//! max_total_bytes = 1073741824   # bytes of keys, values and stream messages in the store (-32050 beyond)
//! cache_bytes = 67108864         # values cached for reads on the event loops
//! vacuum_step_pages = 1024       # free pages given back per step (0: keep them)
//! max_subscriptions = 1024       # topic patterns per connection
//! max_subscriptions_total = 250000  # topic patterns of all connections together
//! max_keys_limit = 10000         # largest kv.keys limit
//! max_keys_scan = 100000         # rows one kv.keys call examines (default 10 x max_keys_limit)
//! purge_interval_ms = 1000
//! checkpoint_interval_ms = 1000
//! handoff_timeout_ms = 30000     # how long a reload or a standby may keep requests waiting
//! commit_delay_us = 100          # under load, let writes gather this long per commit (0: off)
//! no_auth_user = "guest"         # the user connections that did not log in act as (default: none)
//! max_auth_failures = 5          # failed sys.auth after which a connection is closed (0: never)
//! auth_backoff_ms = 500          # pause per address after a failed login, doubling (0: none)
//! auth_backoff_max_ms = 30000    # the longest pause
//! auth_backoff_peers = 4096      # addresses the pause table holds
//! max_streams = 100              # durable streams
//! max_consumers = 1000           # durable consumers, all streams together
//! max_consumer_members = 64      # connections attached to one consumer
//! max_watches = 256              # kv.watch watches per connection (-32050 beyond)
//! max_watches_total = 65536      # watches of all connections together
//! max_pending_requests = 1024   # bus.request calls waiting per connection (-32050 beyond)
//! max_pending_requests_total = 65536  # bus.request calls waiting on the server
//! max_request_timeout_ms = 60000 # largest bus.request timeout_ms
//! max_http_waiters = 1           # bus.request calls over POST /rpc waiting at once (each holds a pool thread)
//! ws_origins = []                # browser origins besides this host's that may open GET /rpc/ws or POST /rpc
//! ws_ping_ms = 25000             # server pings to WebSocket clients (0: none); under half of idle_timeout_ms
//! ws_max_fragments = 1024        # most frames one WebSocket message may come in
//! # [[modules.rpc.users]]: see Access control (none: protected mode)
//! ```
//!
//! # The parts
//!
//! [`jsonrpc`] (framing, pure), [`methods`] (one file per method),
//! [`store`] (the value cache, the totals and limits), [`db`] (SQLite,
//! and its fold thread), [`kv_log`] (the write log's tail),
//! [`writer`] (group commit), [`bus`] (subscription trie), [`conns`]
//! (reply ordering per connection), [`raw`], [`post`] and [`ws`] (the
//! transports), [`dispatch`] (which transport, and serve, wait or
//! forward), [`start`] and [`generation`] (a generation's start and its
//! handover steps), [`handoff`] (reload messages), [`owner`] (one writer
//! per database), [`access`] (users, permissions, logins), [`streams`]
//! (durable streams and consumers; their SQL in [`stream_sql`]),
//! [`inbox`] (`bus.request` waits), [`watch`] (`kv.watch`), [`clock`]
//! (timers), [`config`].
//!
//! # Layers
//!
//! Imports only go down this list; nothing imports from a file above it
//! (unit tests aside), so there is no import circle. A value type many
//! layers pass around lives at the bottom, not in the layer that makes
//! it.
//!
//! 1. Leaves, importing nothing from the crate: [`hex`], [`types`]
//!    (`Kind`, `Reply`, `Mode`), [`host`] (`HostApi`, `wait`),
//!    [`clock`] (timers, `now_ms`), [`stream_sql`] (the streams' tables
//!    and `Op`), [`jsonrpc`], [`config`], [`owner`].
//! 2. Data: [`entry`] (`Entry`, `Overlay`), then [`db`] (over `entry`),
//!    then [`store`] (over `db`).
//! 3. Shared tables: [`bus`], [`conns`], [`cursor`], [`subject`],
//!    [`inbox`], then [`access`] (over `conns`, `bus`, `host`).
//! 4. The components the core owns: [`streams`], [`watch`]. Like
//!    [`inbox`], each names a trait of what it needs from its owner
//!    (`StreamsHost`, `WatchHost`, `InboxHost`) rather than `Core`, so
//!    that the core sits above them; [`core`] implements the traits.
//! 5. [`core`]: `Core`, what every thread of a generation shares.
//! 6. [`methods`]: `table`, `params`, `env`, then one file per method,
//!    then `methods/mod.rs` (evaluation and dispatch).
//! 7. [`writer`], then [`generation`] (`Rpc` holds the writer).
//! 8. The transports: [`raw`], [`post`], [`ws`].
//! 9. [`handoff`] (forwards to the transports), then [`start`] and
//!    [`dispatch`].
//! 10. `lib.rs`: the manifest, the `Handler` the host calls, the export.

pub mod access;
pub mod bus;
pub mod clock;
pub mod config;
pub mod conns;
pub mod core;
pub mod cursor;
pub mod db;
pub mod dispatch;
pub mod entry;
pub mod generation;
pub mod handoff;
pub mod hex;
pub mod host;
pub mod inbox;
pub mod jsonrpc;
pub mod kv_log;
pub mod methods;
pub mod owner;
pub mod post;
pub mod raw;
pub mod start;
pub mod store;
pub mod stream_sql;
pub mod streams;
pub mod subject;
pub mod types;
pub mod watch;
pub mod writer;
pub mod ws;

#[cfg(test)]
mod testdir;
#[cfg(test)]
mod testing;

use std::sync::atomic::Ordering;

use module_api::{ConnInfo, Handler, Manifest, Protocol, ReloadMode, StartContext, Verdict};

use crate::handoff::State;
use crate::host::wait;
use crate::types::Mode;

pub use crate::core::OVERFLOW_NOTICE;
pub use crate::generation::Rpc;
pub use crate::host::HostApi;

/// The module's manifest.
pub fn manifest() -> Manifest {
    Manifest::new("rpc", env!("CARGO_PKG_VERSION"))
        .bind("{")
        .bind("[")
        .bind("POST /rpc")
        .bind("GET /rpc/ws")
        .protocol(Protocol::JsonRpc)
        .reload(ReloadMode::Overlap)
        .defers(true)
}

impl Handler for Rpc {
    fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut module_api::Out) -> Verdict {
        if conn.id == 0 {
            return self.on_call(input, out);
        }
        if let Some(v) = ws::on_message(self, conn, input, out) {
            return v;
        }
        let (http, continuing) = self.transport(conn.id, input);
        let gate = match self.core.gate.try_read() {
            Ok(g) if *g == Mode::Live => g,
            // Frozen (or freezing), or in standby: the pool forwards the
            // message or waits — one HTTP request or raw line at a time,
            // so a pipelined one is not taken along.
            _ if http && !continuing => {
                return match post::frame(self, conn.id, input, conn.draining, false, out) {
                    post::Framed::Body { total, .. } => Verdict::defer(total),
                    post::Framed::NeedMore => Verdict::NEED_MORE,
                    post::Framed::Answered(v) => v,
                }
            }
            _ if http => return Verdict::defer(input.len()),
            _ => return raw::defer_line(self, conn, input, out),
        };
        let v = if http {
            post::on_message(self, conn, continuing, input, out)
        } else {
            raw::on_message(self, conn, input, out)
        };
        drop(gate);
        v
    }

    fn on_deferred(&self, conn: &ConnInfo, input: &[u8], out: &mut module_api::Out) -> Verdict {
        if conn.id == 0 {
            return self.on_call_deferred(input, out);
        }
        let (http, _) = self.transport(conn.id, input);
        let peer = crate::access::peer_of(conn);
        self.deferred(conn.id, peer, conn.draining, http, input, out)
    }

    fn on_close(&self, conn: &ConnInfo) {
        self.closed(conn.id);
        // Its waiting requests: answers to them find nothing.
        self.core.inbox.drop_conn(&*self.core, conn.id);
        let frozen = !matches!(
            self.core.gate.try_read().as_deref(),
            Ok(Mode::Live | Mode::Standby)
        );
        if frozen {
            // The successor holds this connection's subscriptions now.
            let (host, token, id) = (self.core.host, self.token.clone(), conn.id);
            let timeout = self.core.cfg.handoff_timeout();
            self.writer
                .run(move || handoff::forward_close(host, &token, id, timeout));
        } else {
            // Its messages go to the other members of its consumers.
            self.core.streams.closed(conn.id);
        }
    }

    fn save_state(&self) -> Vec<u8> {
        // Wait for the calls in progress, then for the writer: after this,
        // the database holds every write this generation took on.
        if self.freeze() == Mode::Live {
            wait(self.core.host, || self.writer.barrier());
            // Then fold the write log and write nothing more: the
            // successor opens the file next.
            self.writer.handover();
        }
        let state = State {
            version: 1,
            token: self.token.clone(),
            subs: self.core.bus.snapshot(),
            conns: self
                .core
                .conns
                .snapshot()
                .into_iter()
                .map(|(id, partial, http)| handoff::ConnSnap {
                    id,
                    partial: hex::to_hex(&partial),
                    http,
                })
                .collect(),
            lock_fd: Some(self.core.owner_fd.load(Ordering::Acquire)).filter(|fd| *fd >= 0),
            sessions: self.core.access.sessions.snapshot(),
            closed: self.core.conns.closed_ids(),
            consumers: self.core.streams.snapshot(),
            watches: self.core.watches.snapshot(),
            qsubs: self.core.bus.queue_snapshot(),
            inbox: self.core.inbox.snapshot(),
            ws: ws::snapshot(&self.core),
        };
        log::info!(
            "handing over {} subscriptions and {} connection states",
            state.subs.iter().map(|(_, p)| p.len()).sum::<usize>(),
            state.conns.len()
        );
        state.encode()
    }

    fn stop(&self) {
        // Timers first: one may hand work to the writer.
        self.core.clock.stop();
        self.writer.stop();
        let n = self.core.stats.forwarded.load(Ordering::Relaxed);
        if n > 0 {
            log::info!("forwarded {n} messages to the next generation during the handover");
        }
    }

    fn status(&self) -> String {
        let (subscribers, patterns) = self.core.bus.counts();
        let s = &self.core.stats;
        let mut line = format!(
            "keys={} revision={} watches={} kv_bytes={} cached_bytes={} subscribers={subscribers} subscriptions={patterns} commits={} writes={} failed_commits={} purged={} sync={} users={} logged_in={}{}{}",
            self.core.store.len(),
            self.core.store.revision(),
            self.core.watches.len(),
            self.core.store.totals().bytes,
            self.core.store.cached_bytes(),
            s.commits.load(Ordering::Relaxed),
            s.writes.load(Ordering::Relaxed),
            s.failed_commits.load(Ordering::Relaxed),
            s.purged.load(Ordering::Relaxed),
            self.core.cfg.sync.name(),
            self.core.access.users.len(),
            self.core.access.sessions.logged_in(),
            // No users: only loopback peers are served.
            if self.core.access.users.is_empty() {
                " protected=1"
            } else {
                ""
            },
            match self.core.gate.try_read().as_deref() {
                Ok(Mode::Standby) => " standby=1",
                Ok(Mode::Frozen) => " handed_over=1",
                _ => "",
            },
        );
        line.push_str(&self.core.inbox.status());
        line
    }
}

fn start(ctx: StartContext<'_>) -> Result<Rpc, String> {
    Rpc::start(&ctx.config, &ctx.host.data_dir(), ctx.state, ctx.host)
}

module_api::export_module!(manifest = manifest, start = start);

#[cfg(test)]
mod tests {
    use module_api::{ConnInfo, Handler, RVec};

    use crate::testing::NullHost;
    use crate::Rpc;

    #[test]
    fn http_answers_close_the_connection_while_the_host_drains() {
        let dir = crate::testdir::TestDir::new("draining");
        let rpc = Rpc::start(&serde_json::json!({}), dir.path(), b"", &NullHost).unwrap();
        let body = br#"{"jsonrpc":"2.0","method":"sys.ping","id":1}"#;
        let req = format!(
            "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            std::str::from_utf8(body).unwrap()
        );
        let mut info = ConnInfo::new(9, "127.0.0.1:1".parse().unwrap(), false);
        for draining in [false, true] {
            info.draining = draining;
            let mut out = RVec::new();
            let v = rpc.on_message(&info, req.as_bytes(), module_api::Out::from_mut(&mut out));
            let text = String::from_utf8_lossy(&out).into_owned();
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(text.contains(r#""result":"pong""#), "{text}");
            assert_eq!(text.contains("Connection: close\r\n"), draining, "{text}");
            let want = if draining {
                module_api::Action::Close
            } else {
                module_api::Action::Done
            };
            assert_eq!(v.action, want);
            rpc.on_close(&info);
        }
        rpc.stop();
    }
}

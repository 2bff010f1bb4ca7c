//! Dispatch: what the loop does with a connection's bytes. `drive` reads,
//! processes and writes until no more progress; `process` routes each
//! buffered message and calls its module; `apply` acts on the module's
//! verdict once [`verdict::check`](super::verdict::check) accepted it.
//! Results from the worker pool, the control thread and pushes arrive
//! through `drain_inbox`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use abi_stable::std_types::RSlice;
use module_api::{Action, Verdict};

use super::replies::{bad_request, message_protocol, too_large, unavailable};
use super::verdict::{self, Checked, Given};
use super::{EventLoop, Next, COALESCE_BYTES, MAX_ROUNDS};
use crate::conn::{self, ReadResult, Stage, READ_BUF};
use crate::generation::{CallSite, Generation};
use crate::pool::{Completion, Job, ReplyTo};
use crate::router::{Match, Target};

impl EventLoop {
    /// Reads, processes and writes until no more progress, then decides
    /// whether the connection lives on.
    pub(super) fn drive(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| c.is_proxy()) {
            return self.drive_proxy(key);
        }
        let max_message = self.shared.cfg.max_message_size;
        let budget = self.shared.cfg.max_output_buffer;
        let mut rounds = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            rounds += 1;
            if rounds > MAX_ROUNDS {
                // Fairness: a busy connection yields to the others and is
                // resumed after the next poll (no event would repeat it).
                if !self.again.contains(&key) {
                    self.again.push(key);
                }
                break;
            }
            let mut progress = false;
            if !conn.paused(budget) && !conn.is_eof() && !conn.is_closing() {
                if !conn.rbuf().is_attached() {
                    let buf = self.buffers.pop().unwrap_or_else(|| vec![0; READ_BUF]);
                    conn.attach_read_buffer(buf);
                }
                let was_empty = conn.rbuf().is_empty();
                let grown_before = conn.rbuf().grown();
                let result = conn.read(max_message);
                let grew = conn.rbuf().grown() - grown_before;
                if grew > 0 {
                    let total = self.shared.buffered.fetch_add(grew, Ordering::AcqRel) + grew;
                    let limit = self.shared.cfg.max_buffered_bytes;
                    if total > limit {
                        let (id, peer) = (conn.info().id, conn.info().peer());
                        if self.refusal_log_due() {
                            log::warn!(
                                "conn {id} from {peer}: incomplete messages of all connections \
                                 hold {total} bytes, over max_buffered_bytes ({limit}): closing \
                                 this one (logged at most once a second)"
                            );
                        }
                        return self.close(key, "max_buffered_bytes");
                    }
                }
                match result {
                    Ok(ReadResult::Read(n)) => {
                        if n > 0 {
                            progress = true;
                            conn.begin_message(was_empty, self.now);
                        }
                    }
                    Ok(ReadResult::Full) => {
                        log::warn!(
                            "conn {} from {}: message exceeds {max_message} bytes, closing",
                            conn.info().id,
                            conn.info().peer()
                        );
                        // Tell the client why, in its module's protocol,
                        // then close once that is sent.
                        let Stage::Module(g) = conn.stage() else {
                            return self.close(key, "message too large");
                        };
                        let protocol = message_protocol(g.protocol, conn.rbuf().bytes());
                        too_large(conn.out_mut(), protocol);
                        conn.close_after_output();
                        progress = true;
                    }
                    Err(e) if conn.tls_handshaking() => {
                        // A refused client certificate lands here too
                        // (none sent while required, unknown issuer,
                        // expired, malformed chain): the operator sees
                        // who and why; a flood of them logs once a second
                        // at info, the rest at debug.
                        let (id, peer) = (conn.info().id, conn.info().peer());
                        if self.refusal_log_due() {
                            log::info!("conn {id} from {peer}: tls handshake failed: {e}");
                        } else {
                            log::debug!("conn {id} from {peer}: tls handshake failed: {e}");
                        }
                        return self.close(key, "tls handshake failed");
                    }
                    Err(e) => {
                        log::debug!("conn {}: read error: {e}", conn.info().id);
                        return self.close(key, "read error");
                    }
                }
                self.record_identity(key);
            }
            match self.process(key) {
                Ok(p) => progress |= p,
                Err(why) => return self.close(key, why),
            }
            let conn = &mut self.conns[key];
            progress |= conn.release_pushes();
            match conn.flush() {
                Ok(p) => {
                    if p {
                        conn.touch(self.now);
                        progress = true;
                        conn.shrink_output();
                    }
                }
                Err(e) => {
                    log::debug!("conn {}: write error: {e}", conn.info().id);
                    return self.close(key, "write error");
                }
            }
            if !progress {
                break;
            }
        }
        let conn = &mut self.conns[key];
        if conn.rbuf().is_empty() && conn.rbuf().grown() > 0 {
            // A read buffer grown for one large message is freed as soon
            // as that message is consumed, not kept while the connection
            // lives (and counted against max_buffered_bytes).
            if let Some(buf) = conn.detach_read_buffer() {
                let grown = buf.len() - READ_BUF;
                self.shared.buffered.fetch_sub(grown, Ordering::AcqRel);
            }
        }
        if conn.pending_output() {
            return;
        }
        if conn.is_closing() {
            return self.close(key, "closed by module");
        }
        if conn.idle() {
            if conn.is_eof() {
                return self.close(key, "peer closed");
            }
            // Draining: it closes once it has answered a message since
            // (or when the idle grace ends, in `run`).
            if conn.info().draining && (conn.answered_draining() || self.idle_grace_over) {
                return self.close(key, "shutdown");
            }
            let wbuf = conn.take_write_buffer();
            if let Some(buf) = conn.detach_read_buffer() {
                let grown = buf.len().saturating_sub(READ_BUF);
                self.shared.buffered.fetch_sub(grown, Ordering::AcqRel);
                self.recycle(buf);
            }
            self.recycle_wbuf(wbuf);
        } else if conn.is_eof() && matches!(conn.stage(), Stage::Routing | Stage::Module(_)) {
            // A partial message can never complete now.
            self.close(key, "peer closed mid-message");
        }
    }

    /// Routes and hands buffered messages to modules until input runs out or
    /// the connection must wait. Returns whether anything happened.
    pub(super) fn process(&mut self, key: usize) -> Result<bool, &'static str> {
        self.refresh_table();
        let budget = self.shared.cfg.max_output_buffer;
        let mut progress = false;
        loop {
            let conn = &mut self.conns[key];
            if conn.rbuf().is_empty() || conn.paused(budget) || conn.is_closing() {
                return Ok(progress);
            }
            match conn.stage() {
                Stage::Routing if conn.sticky().is_some() => {
                    let name = conn.sticky().unwrap_or_default();
                    match self.table.by_name(name) {
                        Some(Target::Module(g)) => {
                            g.stats.conns.fetch_add(1, Ordering::Relaxed);
                            conn.route_to(g.clone());
                        }
                        Some(Target::Unavailable(protocol)) => {
                            unavailable(conn.out_mut(), *protocol);
                            conn.close_after_output();
                        }
                        _ => {
                            log::info!(
                                "conn {}: module {name} that kept it is gone, closing",
                                conn.info().id
                            );
                            conn.close_after_output();
                        }
                    }
                }
                Stage::Routing if !conn.tls_checked() => match self.start_tls(key) {
                    Ok(true) => {}
                    Ok(false) => return Ok(progress),
                    Err(why) => return Err(why),
                },
                Stage::Routing => {
                    let input = conn.rbuf().bytes();
                    match self.table.lookup(input) {
                        Match::NeedMore => {
                            if input.len() > self.shared.cfg.max_header_size {
                                log::info!(
                                    "conn {} from {}: {} bytes match no binding yet, closing",
                                    conn.info().id,
                                    conn.info().peer(),
                                    input.len()
                                );
                                conn.close_after_output();
                                return Ok(true);
                            }
                            return Ok(progress);
                        }
                        Match::None => {
                            let shown: String = input
                                .iter()
                                .take(32)
                                .flat_map(|b| std::ascii::escape_default(*b))
                                .map(char::from)
                                .collect();
                            log::info!(
                                "conn {} from {}: no module for \"{shown}\", closing",
                                conn.info().id,
                                conn.info().peer()
                            );
                            // An HTTP client is told why (as nginx does)
                            // rather than left guessing at a reset.
                            if crate::router::looks_like_http(input) {
                                bad_request(conn.out_mut());
                            }
                            // Replies to earlier messages still go out.
                            conn.close_after_output();
                            return Ok(true);
                        }
                        Match::Found(Target::Builtin(b)) => {
                            let b = *b;
                            match self.builtin(key, b) {
                                Next::Keep => {}
                                Next::Close(why) => return Err(why),
                            }
                        }
                        Match::Found(Target::Module(g)) => {
                            g.stats.conns.fetch_add(1, Ordering::Relaxed);
                            conn.route_to(g.clone());
                        }
                        Match::Found(Target::Unavailable(protocol)) => {
                            unavailable(conn.out_mut(), *protocol);
                            conn.close_after_output();
                        }
                    }
                }
                Stage::Module(g) => {
                    let g = g.clone();
                    if conn.output().capacity() == 0 {
                        if let Some(w) = self.pooled_wbuf() {
                            self.conns[key].give_write_buffer(w);
                        }
                    }
                    let conn = &mut self.conns[key];
                    let mark = conn.output_mark();
                    // The module answers no further pipelined message in
                    // this call once `out` reaches the limit; one that
                    // ignores it overshoots once, then `paused` holds it.
                    conn.set_out_limit(budget);
                    let (info, input, out) = conn.message_io();
                    let verdict = g.call(CallSite::Message, |m| {
                        m.on_message(info, RSlice::from_slice(input), out)
                    });
                    // An incomplete message waits for more bytes from the
                    // socket; asking again now would spin.
                    let wait = verdict.action == Action::NeedMore;
                    if !wait {
                        // Told that the connection drains: it may close
                        // once this answer is out.
                        conn.note_answer();
                    }
                    match self.apply(key, &g, verdict, mark) {
                        Next::Keep if wait => return Ok(progress),
                        Next::Keep => {}
                        Next::Close(why) => return Err(why),
                    }
                }
                Stage::Deferred(_) | Stage::Admin | Stage::Proxy(_) => return Ok(progress),
            }
            progress = true;
        }
    }

    /// Once the TLS handshake has completed, records the names on the
    /// client's verified certificate for modules (mutual TLS). Runs right
    /// after a read, so before any decrypted byte reaches a module.
    pub(super) fn record_identity(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let Some(der) = conn.take_client_cert() else {
            return;
        };
        let (id, peer) = (conn.info().id, conn.info().peer());
        match crate::tls::identity::names(&der) {
            Ok(names) if names.is_empty() => {
                log::debug!("conn {id} from {peer}: client certificate without usable names");
            }
            Ok(names) => {
                log::debug!("conn {id} from {peer}: client certificate for {names:?}");
                conn.mark_identity();
                self.shared.services.set_peer_identity(id, names.into());
            }
            // rustls verified it, so this is rare: the connection goes on
            // without an identity, as if no certificate had been sent.
            Err(e) => log::warn!("conn {id} from {peer}: {e}; no identity recorded"),
        }
    }

    /// Looks at a new connection's first bytes: a TLS ClientHello for a
    /// name with a certificate starts termination here. Returns `false`
    /// while more bytes are needed.
    pub(super) fn start_tls(&mut self, key: usize) -> Result<bool, &'static str> {
        let conn = &mut self.conns[key];
        if !self.shared.tls.active() || conn.input().first() != Some(&0x16) {
            conn.mark_tls_checked();
            return Ok(true);
        }
        let name = match module_api::tls::sni(conn.input()) {
            module_api::tls::Sni::Incomplete => return Ok(false),
            module_api::tls::Sni::NotTls => {
                conn.mark_tls_checked();
                return Ok(true);
            }
            module_api::tls::Sni::Hello(name) => name,
        };
        conn.mark_tls_checked();
        let Some(config) = self.shared.tls.terminate(name.as_deref()) else {
            return Ok(true); // passthrough, or no certificate: route as is
        };
        let session = match rustls::ServerConnection::new(config) {
            Ok(s) => s,
            Err(e) => {
                log::error!("tls: cannot start a session: {e}");
                return Err("tls setup failed");
            }
        };
        if let Err(e) = conn.start_tls(session) {
            log::debug!("conn {}: tls handshake failed: {e}", conn.info().id);
            return Err("tls handshake failed");
        }
        log::trace!("conn {}: tls for {:?}", conn.info().id, name);
        Ok(true)
    }

    /// Applies a module's verdict to the connection; `mark` is where the
    /// call's output starts.
    pub(super) fn apply(
        &mut self,
        key: usize,
        g: &Arc<Generation>,
        v: Verdict,
        mark: usize,
    ) -> Next {
        let now = self.now;
        let conn = &mut self.conns[key];
        if v.fault {
            g.count_fault(
                CallSite::Message,
                &format_args!(
                    "panicked on conn {} from {}",
                    conn.info().id,
                    conn.info().peer()
                ),
            );
        }
        let given = Given {
            available: conn.input().len(),
            wrote: conn.output_mark() != mark,
            deferred: false,
            defers_declared: g.defers,
        };
        let checked = match verdict::check(&v, given) {
            Ok(checked) => checked,
            Err(violation) => {
                g.count_fault(CallSite::Message, &violation);
                return Next::Close("module violation");
            }
        };
        match checked {
            Checked::NeedMore => {
                if conn.input().len() >= self.shared.cfg.max_message_size {
                    log::warn!(
                        "conn {} from {}: message exceeds {} bytes, closing",
                        conn.info().id,
                        conn.info().peer(),
                        self.shared.cfg.max_message_size
                    );
                    let protocol = message_protocol(g.protocol, conn.input());
                    too_large(conn.out_mut(), protocol);
                    conn.close_after_output();
                }
                // Otherwise wait for more bytes: this round stops.
                Next::Keep
            }
            Checked::Defer { consumed } => {
                let msg = conn.defer(g.clone(), consumed);
                self.shared.pool.submit(Job {
                    gen: g.clone(),
                    info: *conn.info(),
                    msg,
                    to: ReplyTo {
                        loop_idx: self.idx,
                        key,
                        conn_id: conn.info().id,
                    },
                });
                Next::Keep
            }
            Checked::Proxy => {
                // What the module wrote goes to the upstream, first.
                let out = conn.take_output_since(mark);
                if conn.is_tls() {
                    log::error!(
                        "{}: cannot proxy conn {}: the host terminated its TLS",
                        g.name,
                        conn.info().id
                    );
                    return Next::Close("proxy of a TLS-terminated connection");
                }
                let initial = conn.take_input();
                self.start_proxy(key, g.clone(), v.upstream, out, initial, 0);
                Next::Keep
            }
            Checked::Finish { consumed } => {
                conn.consume(consumed);
                conn.finish_message(g, v, now);
                Next::Keep
            }
        }
    }

    /// Delivers results from the pool, the control thread and pushes.
    ///
    /// Pushes are coalesced: each is queued on its connection at once (in
    /// order, its backlog checked), and every connection that got one is
    /// written once after the drain (or sooner, once `COALESCE_BYTES` are
    /// queued), so a burst of published messages leaves in one `write`
    /// per connection rather than one per message.
    /// Only what is in the mailbox when the drain starts is taken: a
    /// steady stream of pushes cannot hold the loop here (the loop polls
    /// without sleeping while the mailbox is not empty).
    pub(super) fn drain_inbox(&mut self) {
        // Re-arm the wake-up before looking: a push sent from here on wakes
        // the loop again, one sent before is seen by this drain.
        self.shared.mailboxes[self.idx].rearm();
        for _ in 0..self.inbox.len() {
            let Ok(c) = self.inbox.try_recv() else {
                break;
            };
            let to = match c {
                Completion::Deferred { to, .. } | Completion::Admin { to, .. } => to,
                Completion::Push {
                    conn_ids,
                    module,
                    data,
                    notice,
                    refused,
                } => {
                    for conn_id in conn_ids {
                        self.push(conn_id, &module, &data, &notice, refused);
                    }
                    if !refused {
                        self.shared.push_pending.release(self.idx, data.len());
                    }
                    continue;
                }
                Completion::Pushes(batch) => {
                    // Taken whole, then queued: a push this queueing
                    // causes (a module called for a full backlog) starts
                    // a new batch rather than waiting on this one.
                    let pushes = batch.take();
                    for item in &pushes.items {
                        let data = &pushes.bytes[item.data.clone()];
                        for &conn_id in &pushes.conn_ids[item.conns.clone()] {
                            self.push(conn_id, &item.module, data, &item.notice, item.refused);
                        }
                        if !item.refused {
                            self.shared.push_pending.release(self.idx, data.len());
                        }
                    }
                    continue;
                }
            };
            let Some(conn) = self.conns.get_mut(to.key) else {
                continue;
            };
            if conn.info().id != to.conn_id {
                continue; // the connection closed; its slot was reused
            }
            match c {
                Completion::Deferred { out, verdict, .. } => {
                    let Some(g) = conn.resume(&out) else {
                        continue;
                    };
                    if verdict.fault {
                        g.count_fault(CallSite::Deferred, &"panicked in the deferred call");
                    }
                    let given = Given {
                        available: 0,
                        wrote: !out.is_empty(),
                        deferred: true,
                        defers_declared: g.defers,
                    };
                    let v = match verdict::check(&verdict, given) {
                        Ok(_) => verdict,
                        Err(violation) => {
                            g.count_fault(CallSite::Deferred, &violation);
                            Verdict::close(0)
                        }
                    };
                    conn.finish_message(&g, v, self.now);
                }
                Completion::Admin { reply, .. } => conn.admin_done(reply.as_bytes()),
                Completion::Push { .. } | Completion::Pushes(_) => unreachable!("handled above"),
            }
            self.drive(to.key);
        }
        self.write_pushed();
    }

    /// Writes the connections that got pushes during the drain, once each
    /// (pushes join the output behind what the connection already has:
    /// replies and pushes keep the order in which they reached the loop).
    fn write_pushed(&mut self) {
        // `drive` never queues a push, so the list stays empty meanwhile;
        // its allocation is kept for the next turn.
        let mut keys = std::mem::take(&mut self.pushed);
        for &(key, conn_id) in &keys {
            match self.conns.get_mut(key) {
                Some(conn) if conn.info().id == conn_id => conn.clear_push_queued(),
                _ => continue, // closed meanwhile
            }
            self.drive(key);
        }
        keys.clear();
        self.pushed = keys;
        self.pushed_bytes = 0;
    }

    /// Queues bytes a module pushed to one of this loop's connections; the
    /// connection is written after the drain (`write_pushed`).
    pub(super) fn push(
        &mut self,
        conn_id: u64,
        module: &Arc<str>,
        data: &[u8],
        notice: &[u8],
        refused: bool,
    ) {
        let (_, key) = conn::id_parts(conn_id);
        let limit = self.shared.cfg.max_push_backlog;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.info().id != conn_id || conn.is_closing() {
            return;
        }
        conn.watch(module);
        if refused {
            conn.push_notice_and_close(notice);
        } else if !conn.push(data, limit) {
            // Over the backlog with pushes still held for this turn's
            // write: write what is queued first, so that the cap counts
            // what the socket refused, as when every push was written at
            // once, not what this loop held back to coalesce.
            self.drive(key);
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.info().id != conn_id || conn.is_closing() {
                return;
            }
            if !conn.push(data, limit) {
                log::warn!(
                    "conn {} from {}: {module} push backlog over {limit} bytes, disconnecting the slow reader",
                    conn.info().id,
                    conn.info().peer()
                );
                conn.push_notice_and_close(notice);
            }
        }
        let conn = &mut self.conns[key];
        if conn.mark_push_queued() {
            self.pushed.push((key, conn_id));
        }
        // Every connection copies what it queues: bounded per turn, so a
        // large message to many subscribers is written (and its copies
        // freed) a few connections at a time, not held for all of them.
        self.pushed_bytes += data.len();
        if self.pushed_bytes >= COALESCE_BYTES {
            self.write_pushed();
        }
    }
}

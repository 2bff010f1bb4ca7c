//! The event loop's side of the built-in commands: parsing the line,
//! checking who may run it, answering the cheap ones at once and handing
//! `RELOAD`, `STATUS`, `RUN` and `UPGRADE` to the control thread.

use super::{EventLoop, Next};
use crate::admin::{self, Command};
use crate::conn::Stage;
use crate::pool::{AdminReply, Completion, ReplyTo};
use crate::router::Builtin;

impl EventLoop {
    /// Runs a built-in command whose line is (perhaps partly) buffered.
    pub(super) fn builtin(&mut self, key: usize, b: Builtin) -> Next {
        let conn = &mut self.conns[key];
        let input = conn.rbuf.bytes();
        let Some(nl) = input.iter().position(|&c| c == b'\n') else {
            if input.len() > admin::MAX_LINE {
                conn.wbuf.extend_from_copy_slice(b"ERR line too long\n");
                conn.closing = true;
            }
            // Otherwise wait for the rest of the line.
            return Next::Keep;
        };
        let mut line = &input[..nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let cmd = admin::parse(line);
        let _ = b; // the prefix only routed here; the line decides.
        let allowed = conn.trusted || conn.authed;
        let to = ReplyTo {
            loop_idx: self.idx,
            key,
            conn_id: conn.info.id,
        };
        let reply: Option<&[u8]> = match &cmd {
            c if c.privileged() && !allowed => Some(b"ERR forbidden\n"),
            Command::Close => {
                conn.closing = true;
                Some(b"OK bye\n")
            }
            Command::Auth(token) => match &self.shared.cfg.admin_token {
                Some(expected) if admin::token_matches(token, expected) => {
                    conn.authed = true;
                    Some(b"OK\n")
                }
                Some(_) => Some(b"ERR bad token\n"),
                None => Some(b"ERR no admin token is configured\n"),
            },
            Command::Unknown => Some(b"ERR unknown command\n"),
            Command::Shutdown => {
                log::info!("SHUTDOWN from {}", conn.info.peer());
                self.shared.shutdown();
                Some(b"OK shutting down\n")
            }
            Command::Status => {
                let shared = self.shared.clone();
                self.shared.control.run(move || {
                    let reply = admin::status(&shared);
                    shared.mailboxes[to.loop_idx].send(Completion::Admin { to, reply });
                });
                None
            }
            Command::Reload(name) => {
                log::info!(
                    "RELOAD {} from {}",
                    name.unwrap_or("(all)"),
                    conn.info.peer()
                );
                let shared = self.shared.clone();
                let name = name.map(str::to_owned);
                self.shared.control.run(move || {
                    let reply = admin::reload(&shared, name.as_deref());
                    shared.mailboxes[to.loop_idx].send(Completion::Admin { to, reply });
                });
                None
            }
            Command::Upgrade => {
                log::info!("UPGRADE from {}", conn.info.peer());
                crate::worker_link::upgrade(
                    self.shared.clone(),
                    AdminReply::conn(&self.shared.mailboxes, to),
                );
                None
            }
            Command::Run(module, job) => {
                log::info!("RUN {module} {job} from {}", conn.info.peer());
                let reply = AdminReply::conn(&self.shared.mailboxes, to);
                admin::run(&self.shared, module, job, reply);
                None
            }
        };
        conn.rbuf.consume(nl + 1);
        conn.msg_start = None;
        conn.last_activity = self.now;
        match reply {
            Some(r) => conn.wbuf.extend_from_copy_slice(r),
            None => conn.stage = Stage::Admin,
        }
        Next::Keep
    }
}

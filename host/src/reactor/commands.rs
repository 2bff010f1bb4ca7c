//! The event loop's side of the built-in commands: parsing the line,
//! checking who may run it, answering the cheap ones at once and handing
//! `RELOAD`, `STATUS`, `RUN` and `UPGRADE` to the control thread.
//!
//! Rights are decided for every line against the admin settings in force
//! ([`crate::access::AdminAccess`], replaced on `RELOAD`): a peer inside
//! `admin_from` that is not one of our own upstream sockets, or a
//! connection that authenticated with the token still configured, may run
//! the privileged commands; anyone else gets `ERR forbidden`. `CLOSE` is
//! for everyone. A line longer than [`admin::MAX_LINE`] is refused and the
//! connection closed.

use super::{EventLoop, Next};
use crate::access::Standing;
use crate::admin::{self, Command, Reply};
use crate::pool::{AdminReply, Completion, ReplyTo};
use crate::router::Builtin;

impl EventLoop {
    /// Runs a built-in command whose line is (perhaps partly) buffered.
    pub(super) fn builtin(&mut self, key: usize, b: Builtin) -> Next {
        let conn = &mut self.conns[key];
        let input = conn.rbuf().bytes();
        let nl = input.iter().position(|&c| c == b'\n');
        // Too long whether or not its end already arrived (a long line
        // read in one go has its newline in the buffer).
        if nl.unwrap_or(input.len()) > admin::MAX_LINE {
            log::warn!(
                "conn {} from {}: command line over {} bytes, closing",
                conn.info().id,
                conn.info().peer(),
                admin::MAX_LINE
            );
            conn.out_mut()
                .extend_from_copy_slice(Reply::LineTooLong.text().as_bytes());
            conn.close_after_output();
            return Next::Keep;
        }
        let Some(nl) = nl else {
            // Wait for the rest of the line.
            return Next::Keep;
        };
        // A copy of the (short) line: the command borrows it while the
        // connection changes under it (`CLOSE`, `AUTH`).
        let mut line = input[..nl].to_vec();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let cmd = admin::parse(&line);
        let _ = b; // the prefix only routed here; the line decides.
        let access = self.shared.admin.current();
        let peer = conn.info().peer();
        let self_forwarded = conn.info().self_forwarded;
        let standing = access.standing(peer, conn.auth(), |p| {
            self_forwarded || self.shared.own_upstreams.contains(p)
        });
        if standing == Standing::SelfForwarded
            && cmd.privileged()
            && conn.auth_mut().first_self_forward()
        {
            log::warn!(
                "conn {} from {peer}: an upstream socket of this server (a proxy route \
                 pointing back at our own port): not an admin peer by address",
                conn.info().id
            );
        }
        let allowed = standing == Standing::Admin;
        let to = ReplyTo {
            loop_idx: self.idx,
            key,
            conn_id: conn.info().id,
        };
        let reply: Option<Reply> = match &cmd {
            c if c.privileged() && !allowed => Some(Reply::Forbidden),
            Command::Close => {
                conn.close_after_output();
                Some(Reply::Bye)
            }
            Command::Auth(token) => {
                let now = self.now;
                let r = admin::auth(
                    &access,
                    &self.shared.auth_backoff,
                    conn.auth_mut(),
                    peer,
                    token,
                    now,
                );
                if r.closes() {
                    conn.close_after_output();
                }
                Some(Reply::Auth(r))
            }
            Command::Unknown => Some(Reply::Unknown),
            Command::Shutdown if !access.public_shutdown => {
                log::warn!("SHUTDOWN from {peer} refused: public_shutdown = false");
                Some(Reply::ShutdownDisabled)
            }
            Command::Shutdown => {
                log::info!("SHUTDOWN from {}", conn.info().peer());
                self.shared.shutdown();
                Some(Reply::ShuttingDown)
            }
            Command::Status => {
                let shared = self.shared.clone();
                self.shared.control.run(move || {
                    let reply = admin::status(&shared).text();
                    shared.mailboxes[to.loop_idx].send(Completion::Admin { to, reply });
                });
                None
            }
            Command::Reload(name) => {
                log::info!(
                    "RELOAD {} from {}",
                    name.unwrap_or("(all)"),
                    conn.info().peer()
                );
                let shared = self.shared.clone();
                let name = name.map(str::to_owned);
                self.shared.control.run(move || {
                    let reply = admin::reload(&shared, name.as_deref()).text();
                    shared.mailboxes[to.loop_idx].send(Completion::Admin { to, reply });
                });
                None
            }
            Command::Upgrade => {
                log::info!("UPGRADE from {}", conn.info().peer());
                let reply = AdminReply::conn(&self.shared.mailboxes, to);
                admin::upgrade(self.shared.clone(), move |r| reply.send(r.text()));
                None
            }
            Command::Run(module, job) => {
                log::info!("RUN {module} {job} from {}", conn.info().peer());
                let reply = AdminReply::conn(&self.shared.mailboxes, to);
                admin::run(&self.shared, module, job, move |r| reply.send(r.text()));
                None
            }
        };
        conn.answered_command(nl + 1, self.now);
        match reply {
            Some(r) => conn.out_mut().extend_from_copy_slice(r.text().as_bytes()),
            None => conn.await_admin(),
        }
        Next::Keep
    }
}

//! Host services that modules call back into: server push to a
//! connection, and in-process calls to another module.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};

use abi_stable::std_types::{RSlice, RVec};
use module_api::{Action, CallStatus, ConnInfo};

use crate::conn;
use crate::pool::{Completion, Mailbox};
use crate::registry::Registry;

/// What every module's host handle shares.
pub struct Services {
    mailboxes: OnceLock<Arc<Vec<Mailbox>>>,
    registry: OnceLock<Weak<Registry>>,
}

impl Services {
    pub fn new() -> Arc<Services> {
        Arc::new(Services {
            mailboxes: OnceLock::new(),
            registry: OnceLock::new(),
        })
    }

    /// Connects the services to the event loops (before any module runs
    /// traffic).
    pub fn set_mailboxes(&self, mailboxes: Arc<Vec<Mailbox>>) {
        let _ = self.mailboxes.set(mailboxes);
    }

    pub fn set_registry(&self, registry: &Arc<Registry>) {
        let _ = self.registry.set(Arc::downgrade(registry));
    }

    /// Queues pushed bytes on the loops that own `conns`: the bytes are
    /// copied once and shared. Returns how many connections were
    /// addressed to a loop.
    pub fn push(&self, module: &Arc<str>, conns: &[u64], data: &[u8], notice: &[u8]) -> usize {
        let Some(mailboxes) = self.mailboxes.get() else {
            return 0;
        };
        let mut per_loop: Vec<Vec<u64>> = vec![Vec::new(); mailboxes.len()];
        for &c in conns {
            let (loop_idx, _) = conn::id_parts(c);
            if let Some(ids) = per_loop.get_mut(loop_idx) {
                ids.push(c);
            }
        }
        let data: Arc<[u8]> = Arc::from(data);
        let notice: Arc<[u8]> = Arc::from(notice);
        let mut sent = 0;
        for (mailbox, conn_ids) in mailboxes.iter().zip(per_loop) {
            if conn_ids.is_empty() {
                continue;
            }
            sent += conn_ids.len();
            mailbox.send(Completion::Push {
                conn_ids,
                module: module.clone(),
                data: data.clone(),
                notice: notice.clone(),
            });
        }
        sent
    }

    /// Runs one complete message through module `name`, inline.
    pub fn call(&self, name: &str, input: &[u8], out: &mut RVec<u8>) -> CallStatus {
        let Some(registry) = self.registry.get().and_then(Weak::upgrade) else {
            return CallStatus::NoSuchModule;
        };
        let g = match registry.current(name) {
            Ok(g) => g,
            Err(status) => return status,
        };
        let info = ConnInfo::new(
            0,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            false,
        );
        // `enter`: a crash or a hang in the callee is pinned on it; its
        // time counts on the caller's clock, its waits do not.
        let mut v = g.enter(|m| m.on_message(&info, RSlice::from_slice(input), out));
        if v.action == Action::Defer {
            let n = (v.consumed as usize).min(input.len());
            v = g.enter(|m| m.on_deferred(&info, RSlice::from_slice(&input[..n]), out));
        }
        if v.fault {
            g.stats
                .faults
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return CallStatus::Fault;
        }
        if v.body.is_some() {
            out.extend_from_copy_slice(v.body.bytes());
        }
        if v.file.is_some() {
            if let Err(e) = read_file_body(&v.file, out) {
                log::error!("call to {name}: reading its file body failed: {e}");
                return CallStatus::Fault;
            }
        }
        match v.action {
            Action::NeedMore => CallStatus::Incomplete,
            _ => {
                g.stats
                    .requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                CallStatus::Ok
            }
        }
    }
}

/// Appends a module's file body to `out` (an in-process caller gets the
/// whole answer in memory).
fn read_file_body(file: &module_api::FileBody, out: &mut RVec<u8>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut offset, mut left) = (file.offset(), file.len());
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = crate::conn::read_at(file.fd(), &mut buf[..want], offset)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file truncated",
            ));
        }
        out.extend_from_copy_slice(&buf[..n]);
        offset += n as u64;
        left -= n as u64;
    }
    Ok(())
}

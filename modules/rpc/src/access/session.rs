//! Who each raw TCP connection is logged in as, kept for the life of the
//! connection (created at its first message while users are configured,
//! dropped when it closes) and handed to the next generation on reload.
//!
//! A [`Login`] counts against its user's `max_connections` for as long as
//! it exists: dropping it (the connection closed, logged in as someone
//! else, or its generation retired) gives the slot back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::decide::Peer;
use super::users::User;

const SHARDS: usize = 16;

/// How a connection came to act as its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// `sys.auth` or `Authorization: Bearer`.
    Token,
    /// A verified client certificate names the user.
    Cert,
    /// Not authenticated; `no_auth_user` applies.
    NoAuthUser,
}

impl How {
    pub fn name(self) -> &'static str {
        match self {
            How::Token => "token",
            How::Cert => "cert",
            How::NoAuthUser => "no_auth_user",
        }
    }
}

/// A connection logged in as a user, holding one of its connection slots.
#[derive(Debug)]
pub struct Login {
    pub user: Arc<User>,
    pub how: How,
}

impl Login {
    /// Takes a connection slot of `user`; `None` at its `max_connections`
    /// (unless `force`: carried over a reload).
    pub fn enter(user: &Arc<User>, how: How, force: bool) -> Option<Login> {
        user.conns.enter(force).then(|| Login {
            user: user.clone(),
            how,
        })
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        self.user.conns.leave();
    }
}

/// One connection's access state.
#[derive(Debug, Default)]
pub struct Session {
    pub login: Option<Login>,
    /// Failed `sys.auth` calls on this connection.
    pub failures: u32,
    pub peer: Peer,
}

/// The sessions of one generation.
pub struct Sessions {
    shards: Box<[Mutex<HashMap<u64, Session>>]>,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Sessions {
    /// Locks the shard that holds `conn`.
    pub fn lock(&self, conn: u64) -> MutexGuard<'_, HashMap<u64, Session>> {
        let i = ((conn ^ (conn >> 32)) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets a closed connection (its login's slot is given back).
    pub fn remove(&self, conn: u64) {
        let gone = self.lock(conn).remove(&conn);
        drop(gone);
    }

    /// Every session, for the next generation: (conn, user, how, the
    /// user's token hash, peer).
    pub fn snapshot(&self) -> Vec<SessionSnap> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let map = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (id, s) in map.iter() {
                out.push(SessionSnap {
                    id: *id,
                    user: s.login.as_ref().map(|l| l.user.name.to_string()),
                    how: s.login.as_ref().map(|l| l.how),
                    token_hash: s.login.as_ref().and_then(|l| l.user.hash_text()),
                    peer: s.peer.ip,
                    self_forwarded: s.peer.self_forwarded,
                });
            }
        }
        out
    }

    /// Connections logged in as some user (for `STATUS`).
    pub fn logged_in(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let map = s.lock().unwrap_or_else(|e| e.into_inner());
                map.values().filter(|s| s.login.is_some()).count()
            })
            .sum()
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's session as handed over on reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSnap {
    pub id: u64,
    pub user: Option<String>,
    pub how: Option<How>,
    /// The user's stored hash when it logged in: a token login whose
    /// user's hash changed (a rotated token) does not survive the reload.
    pub token_hash: Option<String>,
    pub peer: Option<IpAddr>,
    /// The peer is a proxy route of this server back to itself (see
    /// [`Peer::self_forwarded`]); absent from an older generation's state.
    #[serde(default)]
    pub self_forwarded: bool,
}

impl SessionSnap {
    pub fn peer(&self) -> Peer {
        Peer {
            ip: self.peer,
            self_forwarded: self.self_forwarded,
        }
    }
}

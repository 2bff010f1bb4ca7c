//! What the webapp's handlers share: the settings, the message store and
//! the counters `STATUS` shows. Below the handlers (`api`, `pages`) and
//! the crate root, which wires them to the host.

use std::sync::atomic::{AtomicU64, Ordering};

use module_api::web::Response;

use crate::config::Config;
use crate::db::{DbError, Store};
use crate::message::Rules;

/// Counters of one generation, for `STATUS`.
#[derive(Default)]
pub struct Stats {
    pub(crate) posted: AtomicU64,
    pub(crate) deleted: AtomicU64,
    pub(crate) db_errors: AtomicU64,
}

impl Stats {
    pub(crate) fn posted(&self) {
        self.posted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn deleted(&self) {
        self.deleted.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the handlers share.
pub struct App {
    pub cfg: Config,
    pub store: Store,
    pub stats: Stats,
}

impl App {
    /// The rules new messages must meet.
    pub fn rules(&self) -> Rules {
        Rules {
            max_author: self.cfg.max_author,
            max_text: self.cfg.max_text,
        }
    }

    /// The answer to a failed database call: 503 with `Retry-After` when
    /// the database stayed locked, otherwise 500 (logged and counted).
    pub fn db_error(&self, e: DbError) -> Response {
        match e {
            DbError::Busy => {
                log::warn!("{}: busy after the timeout", self.store.path().display());
                Response::error(503, "database busy, retry").header("Retry-After", "1")
            }
            DbError::Other(e) => {
                self.stats.db_errors.fetch_add(1, Ordering::Relaxed);
                log::error!("{}: {e}", self.store.path().display());
                Response::error(500, "database error")
            }
        }
    }
}

//! `webapp`: a message board, as an example of a real web application on
//! Switchyard: HTML pages with forms, a JSON API and an SQLite database,
//! all on the host's worker pool.
//!
//! Routes (see [`api`] and [`pages`]):
//!
//! ```text
//! GET    /app                      301 to /app/
//! GET    /app/                     the board (HTML), ?before=<id> for older
//! POST   /app/messages             post from the HTML form, 303 to /app/
//! POST   /app/messages/:id/delete  delete from the HTML form, 303 to /app/
//! GET    /app/api/messages         JSON list, newest first, ?limit=&before=
//! POST   /app/api/messages         JSON {"author", "text"} -> 201
//! GET    /app/api/messages/:id     JSON message or 404
//! DELETE /app/api/messages/:id     204 or 404
//! ```
//!
//! Bindings: for each of GET, HEAD, POST, PUT, DELETE, PATCH and OPTIONS,
//! the prefixes `"<M> /app/"`, `"<M> /app "` and `"<M> /app?"`. So
//! `/app`, `/app?x` and everything under `/app/` come here, while
//! `/apple.html` still goes to the static `http` module (a bare `"GET /app"`
//! binding would take it).
//!
//! The parts:
//!
//! * [`module_api::web`]: framing (`Content-Length`, chunked, 413), the
//!   router, requests, responses, cookies, HTML escaping. `on_message`
//!   only frames the request on the event loop and defers it; everything
//!   else runs in `on_deferred` on the worker pool (`-threads N`).
//! * [`db`]: the SQLite store (WAL, busy timeout, connection pool,
//!   migrations) and why it links the system's SQLite.
//! * [`message`]: validation of new messages.
//! * [`api`], [`pages`]: the handlers.
//! * [`config`]: the `[modules.webapp]` table.
//!
//! Reload is `overlap`: the new generation opens the same database beside
//! the old one, which finishes its requests and then closes its
//! connections (`stop`). No request fails and no message is lost. This
//! needs one SQLite per process (the system's shared `libsqlite3`); should
//! SQLite ever be compiled into the module, it reloads `exclusive` instead
//! (see [`db`]).
//!
//! Config (`[modules.webapp]`, every key optional):
//!
//! ```toml
//! database = "messages.db"   # relative to <data-dir>/webapp
//! synchronous = "full"       # or "normal": faster writes, not power-cut safe
//! busy_timeout_ms = 5000     # then 503
//! pool_size = 8              # idle connections kept
//! max_body = 65536           # request body limit -> 413
//! max_header_size = 16384    # request head limit -> 431
//! page_size = 20             # messages per page, default API limit
//! max_page = 200             # largest API limit
//! max_text = 2000            # characters
//! max_author = 64            # characters
//! title = "Switchyard message board"
//! ```
//!
//! `STATUS` adds `posted=<N> deleted=<N> db_errors=<N> sqlite=<version>`
//! for this generation.

pub mod api;
pub mod app;
pub mod config;
pub mod db;
pub mod message;
pub mod pages;

use std::sync::atomic::Ordering;

use module_api::web::{Limits, Router};
use module_api::{ConnInfo, Handler, Manifest, Out, Protocol, ReloadMode, StartContext, Verdict};

pub use config::Config;
use db::Store;

pub use app::{App, Stats};

/// One generation of the module.
pub struct Webapp {
    router: Router<App>,
    app: App,
}

impl Webapp {
    /// Starts from the `[modules.webapp]` table: opens and migrates the
    /// database in `data_dir`.
    pub fn new(config: &serde_json::Value, data_dir: &std::path::Path) -> Result<Webapp, String> {
        let cfg = Config::from_json(config, data_dir)?;
        let store = Store::open(&cfg)?;
        let limits = Limits {
            max_head: cfg.max_header_size,
            max_body: cfg.max_body,
        };
        Ok(Webapp {
            router: routes().limits(limits),
            app: App {
                cfg,
                store,
                stats: Stats::default(),
            },
        })
    }

    /// The shared state (for tests).
    pub fn app(&self) -> &App {
        &self.app
    }
}

/// The route table.
pub fn routes() -> Router<App> {
    Router::new()
        .get("/app", pages::to_board)
        .get("/app/", pages::board)
        .post("/app/messages", pages::post)
        .post("/app/messages/:id/delete", pages::delete)
        .get("/app/api/messages", api::list)
        .post("/app/api/messages", api::create)
        .get("/app/api/messages/:id", api::get)
        .delete("/app/api/messages/:id", api::delete)
}

/// The module's manifest.
pub fn manifest() -> Manifest {
    const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    // See db.rs: copies of a compiled-in SQLite must not overlap.
    let reload = if db::sqlite_is_shared() {
        ReloadMode::Overlap
    } else {
        ReloadMode::Exclusive
    };
    METHODS
        .iter()
        .flat_map(|m| ["/app/", "/app ", "/app?"].map(|p| format!("{m} {p}")))
        .fold(
            Manifest::new("webapp", env!("CARGO_PKG_VERSION")),
            |m, prefix| m.bind(prefix),
        )
        .protocol(Protocol::Http)
        .reload(reload)
        .defers(true)
}

fn start(ctx: StartContext<'_>) -> Result<Webapp, String> {
    let app = Webapp::new(&ctx.config, &ctx.host.data_dir())?;
    if !db::sqlite_is_shared() {
        log::warn!(
            "SQLite is compiled into this module: reloads are exclusive (503 while reloading)"
        );
    }
    log::info!(
        "database {} (SQLite {})",
        app.app.store.path().display(),
        db::sqlite_version()
    );
    Ok(app)
}

impl Handler for Webapp {
    fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
        self.router.on_message(&self.app, conn, input, out)
    }

    fn on_deferred(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
        self.router.on_deferred(&self.app, conn, input, out)
    }

    fn stop(&self) {
        self.app.store.close();
    }

    fn status(&self) -> String {
        let s = &self.app.stats;
        format!(
            "posted={} deleted={} db_errors={} sqlite={}",
            s.posted.load(Ordering::Relaxed),
            s.deleted.load(Ordering::Relaxed),
            s.db_errors.load(Ordering::Relaxed),
            db::sqlite_version()
        )
    }
}

module_api::export_module!(manifest = manifest, start = start);

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_app(tag: &str) -> (Webapp, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "webapp-lib-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let app = Webapp::new(&serde_json::json!({ "page_size": 2 }), &dir).unwrap();
        (app, dir)
    }

    fn call(app: &Webapp, raw: &str) -> String {
        let conn = ConnInfo::new(1, "127.0.0.1:1".parse().unwrap(), false);
        let mut out = Out::new();
        let v = app.on_message(&conn, raw.as_bytes(), &mut out);
        assert_eq!(v, Verdict::defer(raw.len()), "{raw}");
        app.on_deferred(&conn, raw.as_bytes(), &mut out);
        String::from_utf8(out.into_inner().into_vec()).unwrap()
    }

    fn post_json(app: &Webapp, body: &str) -> String {
        call(
            app,
            &format!(
                "POST /app/api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    }

    #[test]
    fn bindings_are_exact() {
        let m = manifest();
        let b: Vec<String> = m
            .bindings
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(b.len(), 21);
        assert!(b.contains(&"GET /app/".to_string()));
        assert!(b.contains(&"DELETE /app ".to_string()));
        assert!(!b.iter().any(|p| p == "GET /app"));
        assert_eq!(m.reload, ReloadMode::Overlap);
    }

    #[test]
    fn api_round_trip() {
        let (app, dir) = temp_app("api");
        let out = post_json(&app, r#"{"author":"ann","text":"hi"}"#);
        assert!(out.starts_with("HTTP/1.1 201 Created\r\n"), "{out}");
        assert!(out.contains("Location: /app/api/messages/1\r\n"), "{out}");
        assert!(
            out.contains(r#""id":1,"author":"ann","text":"hi""#),
            "{out}"
        );
        let out = post_json(&app, r#"{"author":"ann"}"#);
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(
            out.contains(r#""error":"missing field: text","field":"text""#),
            "{out}"
        );
        for _ in 0..2 {
            post_json(&app, r#"{"author":"bob","text":"more"}"#);
        }
        let out = call(&app, "GET /app/api/messages HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.contains(r#""next_before":2"#), "{out}");
        let out = call(
            &app,
            "GET /app/api/messages?before=2 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(out.contains(r#""next_before":null"#), "{out}");
        let out = call(&app, "GET /app/ HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.contains("3 messages"), "{out}");
        assert!(out.contains("href=\"/app/?before=2\""), "{out}");
        assert_eq!(app.status().split(' ').next(), Some("posted=3"));
        app.stop();
        let _ = std::fs::remove_dir_all(dir);
    }
}

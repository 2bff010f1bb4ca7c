//! `http`: Switchyard's static file server.
//!
//! Bound to the prefixes of the common HTTP methods (`GET `, `HEAD `, ...),
//! so any HTTP request that no longer binding claims (`GET /app/`) lands
//! here. It serves GET and HEAD from a root directory (`static_html/` by
//! default) and answers every other method with 405 (OPTIONS with 204), both
//! with `Allow: GET, HEAD, OPTIONS`.
//!
//! The parts:
//!
//! * [`request`]: framing and limits of one request, by the SDK's strict
//!   framing rules (400, 413, 414, 431, 501 for a transfer coding other
//!   than `chunked`), method dispatch, the access-log line. Keep-alive and
//!   pipelining: each call consumes exactly one request, body included
//!   (`Content-Length` or chunked).
//! * [`path`]: request target → file, refusing every way out of the root
//!   (`..`, `%2e%2e`, `//abs`, symlinks leading outside).
//! * [`cache`]: resolved files with precomputed headers; small files'
//!   bytes in memory, re-checked against the disk every `revalidate_ms`.
//! * [`serve`]: GET/HEAD through the cache: 200, 206, 301 (directory
//!   without slash), 304, 403, 404, 412, 416. Files above `cache_max_file`
//!   go to the host as an open descriptor, which it sends with `sendfile`.
//! * [`conditional`], [`range`], [`mime`]: the pure rules, unit-tested.
//! * [`reply`]: status line, connection headers, error bodies.
//! * [`config`]: the `[modules.http]` table.
//!
//! Everything runs on the event loop: a cache hit touches no file system,
//! a miss costs a few `stat`s and one read of at most `cache_max_file`
//! bytes, which is what nginx does without `aio`.
//!
//! Config (`[modules.http]`, every key optional):
//!
//! ```toml
//! root = "static_html"          # relative to the working directory
//! index = "index.html"          # served for "/dir/"
//! cache_max_file = 262144       # bytes; larger files are sent with sendfile
//! cache_max_total = 67108864    # bytes held by the cache
//! revalidate_ms = 1000          # how stale a cached file may get (0: re-check always)
//! max_header_size = 16384       # request head limit -> 431
//! max_uri = 8192                # request target limit -> 414
//! max_body = 65536              # request body limit -> 413
//! ```

pub mod cache;
pub mod conditional;
pub mod config;
pub mod mime;
pub mod path;
pub mod range;
pub mod reply;
pub mod request;
pub mod serve;
pub mod site;
#[cfg(test)]
mod testdir;

use module_api::{ConnInfo, Handler, Manifest, Out, Protocol, ReloadMode, StartContext, Verdict};

pub use config::Config;
pub use site::Http;

/// The module's manifest: every common method's prefix.
pub fn manifest() -> Manifest {
    const METHODS: [&str; 9] = [
        "GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "TRACE ", "CONNECT ",
    ];
    METHODS
        .iter()
        .fold(
            Manifest::new("http", env!("CARGO_PKG_VERSION")),
            |m, method| m.bind(method),
        )
        .protocol(Protocol::Http)
        .reload(ReloadMode::Overlap)
}

fn start(ctx: StartContext<'_>) -> Result<Http, String> {
    let http = Http::new(&ctx.config)?;
    log::info!("serving {}", http.cfg.root.display());
    Ok(http)
}

impl Handler for Http {
    fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
        request::handle(self, conn, input, out)
    }

    fn status(&self) -> String {
        let (entries, bytes) = self.cache.stats();
        format!("cache_entries={entries} cache_bytes={bytes}")
    }
}

module_api::export_module!(manifest = manifest, start = start);

//! A small web framework for HTTP modules: routes with path parameters,
//! request bodies (`Content-Length` or chunked, with a size limit), query
//! strings, forms, JSON, cookies, and HTML that escapes user text by
//! construction.
//!
//! The parts, in the order a request meets them:
//!
//! * [`frame`]: is a whole request buffered yet? The SDK's one set of
//!   strict HTTP/1.1 framing rules ([`crate::http::framing`]) over the
//!   connection's bytes: [`Framed::Partial`] (wait), [`Framed::Complete`]
//!   (the message length) or [`Framed::Refused`] (400, 413, 414, 431, 501:
//!   answer and close). The body limit is checked against the declared
//!   length, so an oversized upload is refused before it is received.
//!   [`frame_conn`] resumes where the previous call on the same message
//!   stopped, so a body arriving in many pieces is walked once.
//! * [`Request`]: one complete message, parsed: method, path, the route's
//!   parameters, query, headers, cookies, and the body (chunked bodies
//!   decoded), with [`Request::json`] and [`Request::form`].
//! * [`Router`]: method + path patterns (`/app/messages/:id`) to handlers;
//!   404 for no route, 405 (with `Allow`) for a wrong method, HEAD served by
//!   GET routes, OPTIONS answered from the routes. Its
//!   [`Router::on_message`] and [`Router::on_deferred`] are a module's whole
//!   [`crate::Handler`] for HTTP: by default every request is deferred to
//!   the host's worker pool, where handlers may block (databases, files).
//! * [`Response`]: status, headers, [`Cookie`]s and a body, with
//!   constructors for JSON, HTML, text, redirects and JSON errors.
//! * [`Html`], [`escape`] and [`render`]: the only ways to produce HTML.
//!   Static markup must be a `&'static str` (written by the module author);
//!   everything else passes through [`ToHtml`], which escapes text. User
//!   text therefore cannot reach a page unescaped.
//!
//! Errors the framework produces itself (bad framing, no route, a body that
//! is not JSON) are JSON objects `{"error": "<what is wrong>"}` with the
//! right status, the same shape as [`Response::error`].
//!
//! ```
//! use module_api::web::{self, Request, Response, Router};
//! use module_api::{ConnInfo, Handler, Manifest, Out, StartContext, Verdict};
//!
//! struct Counter {
//!     hits: std::sync::atomic::AtomicU64,
//! }
//!
//! fn hello(state: &Counter, req: &Request<'_>) -> web::Result {
//!     let n = state.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!     let name = req.param("name").unwrap_or("world");
//!     Ok(Response::json(200, &serde_json::json!({ "hello": name, "hits": n })))
//! }
//!
//! struct App {
//!     router: Router<Counter>,
//!     state: Counter,
//! }
//!
//! impl Handler for App {
//!     fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
//!         self.router.on_message(&self.state, conn, input, out)
//!     }
//!     fn on_deferred(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
//!         self.router.on_deferred(&self.state, conn, input, out)
//!     }
//! }
//!
//! fn manifest() -> Manifest {
//!     Manifest::new("hello", "1.0.0").bind("GET /hello/").defers(true)
//! }
//!
//! fn start(_ctx: StartContext<'_>) -> Result<App, String> {
//!     let router = Router::new().get("/hello/:name", hello);
//!     Ok(App { router, state: Counter { hits: 0.into() } })
//! }
//! # fn main() {}
//! ```
//!
//! Limits of this layer: `Expect: 100-continue` is not answered with an
//! interim `100` (a module cannot write before the message is complete);
//! clients send the body after their own timeout (curl: one second), and an
//! oversized declared body is refused at once. Bodies are buffered whole,
//! so [`Limits::max_body`] must stay below the host's `max_message_size`.

mod framing;
mod html;
mod request;
mod response;
mod router;
#[cfg(test)]
mod tests;

pub use framing::{frame, frame_conn, Framed, Limits, Refusal};
pub use html::{escape, render, Html, ToHtml};
pub use request::{decode_component, encode_component, parse_urlencoded, Form, Request};
pub use response::{Cookie, Response, SameSite};
pub use router::{BoxHandler, Pattern, Router};

/// What a handler returns: the response, or an error response (so that
/// `?` works on [`Request::json`], [`Request::form`] and friends).
pub type Result = std::result::Result<Response, Response>;

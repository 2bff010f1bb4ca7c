//! Routing: path [`Pattern`]s with parameters, and the [`Router`] that
//! maps method and path to handlers and drives a module's whole
//! request/response cycle (framing on the event loop, handlers on the pool
//! or inline, 404/405/OPTIONS, keep-alive, the access log).

use super::{decode_component, frame_conn, Framed, Limits, Request, Response, Result};
use crate::{ConnInfo, Out, Verdict};

/// A handler: the module's state and the request in, a response out.
pub type BoxHandler<S> = Box<dyn Fn(&S, &Request<'_>) -> Result + Send + Sync>;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal the (decoded) path segment.
    Literal(String),
    /// `:name`: any one non-empty segment.
    Param(String),
    /// `*name` (last): the rest of the path, possibly empty.
    Rest(String),
}

/// A parsed path pattern such as `/app/messages/:id` or `/files/*path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parses a pattern. It must start with `/`; `*rest` may only be last.
    /// A trailing `/` is significant (`/app/` and `/app` differ).
    pub fn parse(pattern: &str) -> std::result::Result<Pattern, String> {
        let Some(body) = pattern.strip_prefix('/') else {
            return Err(format!("route pattern {pattern:?} must start with /"));
        };
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            segments.push(if let Some(name) = p.strip_prefix(':') {
                if name.is_empty() {
                    return Err(format!("route pattern {pattern:?}: unnamed parameter"));
                }
                Segment::Param(name.to_string())
            } else if let Some(name) = p.strip_prefix('*') {
                if i + 1 != parts.len() {
                    return Err(format!("route pattern {pattern:?}: *{name} must be last"));
                }
                Segment::Rest(name.to_string())
            } else {
                Segment::Literal(p.to_string())
            });
        }
        Ok(Pattern { segments })
    }

    /// Matches a raw (percent-encoded) path; returns the decoded
    /// parameters.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let body = path.strip_prefix('/')?;
        let mut parts = body.split('/');
        let mut params = Vec::new();
        for seg in &self.segments {
            match seg {
                Segment::Rest(name) => {
                    let rest: Vec<&str> = parts.by_ref().collect();
                    params.push((
                        name.clone(),
                        decode_component(rest.join("/").as_bytes(), false),
                    ));
                    return Some(params);
                }
                Segment::Literal(lit) => {
                    let p = parts.next()?;
                    if decode_component(p.as_bytes(), false) != *lit {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let p = parts.next()?;
                    if p.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), decode_component(p.as_bytes(), false)));
                }
            }
        }
        parts.next().is_none().then_some(params)
    }
}

struct Route<S> {
    method: String,
    pattern: Pattern,
    handler: BoxHandler<S>,
}

/// Routes requests to handlers by method and path pattern, and drives the
/// whole request/response cycle for a module.
///
/// Matching: routes are tried in the order they were added; the first
/// whose method and pattern match wins. `HEAD` uses the `GET` route and
/// sends no body. `OPTIONS` on a path some route matches gets 204 with
/// `Allow`. A path that matches a route of another method gets 405 with
/// `Allow`; no match at all, 404. Errors are JSON ([`Response::error`]).
pub struct Router<S> {
    routes: Vec<Route<S>>,
    limits: Limits,
    defer: bool,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router::new()
    }
}

impl<S> Router<S> {
    /// No routes, default [`Limits`], handlers deferred to the pool.
    pub fn new() -> Router<S> {
        Router {
            routes: Vec::new(),
            limits: Limits::default(),
            defer: true,
        }
    }

    /// Sets the size limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The size limits in force.
    pub fn get_limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs handlers on the event loop instead of the worker pool. Only for
    /// handlers that never block (no files, no database, no locks held
    /// long).
    pub fn inline(mut self) -> Self {
        self.defer = false;
        self
    }

    /// Adds a route. `method` is upper-case (`GET`, `POST`, ...). Panics on
    /// a malformed pattern (a bug in the module, found at start).
    pub fn route<F>(mut self, method: &str, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        let pattern = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{e}"));
        self.routes.push(Route {
            method: method.to_ascii_uppercase(),
            pattern,
            handler: Box::new(handler),
        });
        self
    }

    /// `GET` (and `HEAD`) route.
    pub fn get<F>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        self.route("GET", pattern, handler)
    }

    /// `POST` route.
    pub fn post<F>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        self.route("POST", pattern, handler)
    }

    /// `PUT` route.
    pub fn put<F>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        self.route("PUT", pattern, handler)
    }

    /// `PATCH` route.
    pub fn patch<F>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        self.route("PATCH", pattern, handler)
    }

    /// `DELETE` route.
    pub fn delete<F>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        self.route("DELETE", pattern, handler)
    }

    /// Finds the handler for a request and runs it (the route's parameters
    /// are stored in `req`). Pure routing, no I/O: the 404/405/OPTIONS
    /// answers come from here.
    pub fn dispatch(&self, state: &S, req: &mut Request<'_>) -> Response {
        let path = req.path();
        let method = if req.method == "HEAD" {
            "GET"
        } else {
            req.method
        };
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            let Some(params) = route.pattern.matches(path) else {
                continue;
            };
            if route.method == method {
                req.params = params;
                return match (route.handler)(state, req) {
                    Ok(r) | Err(r) => r,
                };
            }
            if !allowed.contains(&route.method.as_str()) {
                allowed.push(&route.method);
            }
        }
        if allowed.is_empty() {
            return Response::error(404, "not found");
        }
        if allowed.contains(&"GET") {
            allowed.push("HEAD");
        }
        allowed.push("OPTIONS");
        let allow = allowed.join(", ");
        if req.method == "OPTIONS" {
            Response::new(204).header("Allow", allow)
        } else {
            Response::error(405, format!("method {} not allowed here", req.method))
                .header("Allow", allow)
        }
    }

    /// The event-loop half of a module's HTTP handling: waits for a whole
    /// request, refuses bad ones, then defers it to the worker pool (or,
    /// with [`Router::inline`], handles it now). Never blocks. One request
    /// per call, so pipelined requests never overrun the connection's
    /// output budget ([`ConnInfo::out_limit`]): the host calls again for
    /// the next one once its output allows.
    pub fn on_message(&self, state: &S, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
        match frame_conn(conn, input, &self.limits) {
            Framed::Partial => Verdict::NEED_MORE,
            Framed::Refused(r) => {
                access_log(conn, input, r.status);
                r.write(out, input.starts_with(b"HEAD "));
                Verdict::close(input.len())
            }
            Framed::Complete(n) if self.defer => Verdict::defer(n),
            Framed::Complete(n) => self.handle(state, conn, &input[..n], out),
        }
    }

    /// The worker-pool half: handles the request [`Router::on_message`]
    /// deferred. May block (in the handler).
    pub fn on_deferred(&self, state: &S, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
        self.handle(state, conn, input, out)
    }

    /// Parses the request at the start of `msg`, dispatches it and writes
    /// the response; the verdict keeps or closes the connection as the
    /// request asked.
    pub fn handle(&self, state: &S, conn: &ConnInfo, msg: &[u8], out: &mut Out) -> Verdict {
        let mut req = match Request::parse(msg, &self.limits) {
            Ok(req) => req,
            Err(r) => {
                access_log(conn, msg, r.status);
                r.write(out, msg.starts_with(b"HEAD "));
                return Verdict::close(msg.len());
            }
        };
        let resp = self.dispatch(state, &mut req);
        let keep = req.keep_alive() && !conn.draining;
        resp.write(out, keep, req.is_http10(), req.method == "HEAD");
        if log::log_enabled!(target: "access", log::Level::Info) {
            log::info!(
                target: "access",
                "{} \"{} {}\" {} {}",
                conn.peer(),
                req.method,
                req.target.replace('"', "%22"),
                resp.status,
                resp.body.len()
            );
        }
        if keep {
            Verdict::done(req.len)
        } else {
            Verdict::close(req.len)
        }
    }
}

/// The access-log line for a request refused before parsing.
fn access_log(conn: &ConnInfo, input: &[u8], status: u16) {
    if log::log_enabled!(target: "access", log::Level::Info) {
        let line = input.split(|&b| b == b'\n').next().unwrap_or(b"");
        let line = String::from_utf8_lossy(&line[..line.len().min(200)]);
        log::info!(
            target: "access",
            "{} \"{}\" {status} -",
            conn.peer(),
            line.trim_end().replace('"', "%22")
        );
    }
}

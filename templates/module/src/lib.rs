//! template_module: a Switchyard HTTP module, made from
//! `templates/module/` by `make new-module`. It answers
//! `GET /template_module/` with a greeting; replace the route and its
//! handler with your own. The crate guide in `module_api/src/lib.rs`
//! explains the contract and the choices made here.

use module_api::web::{self, Request, Response, Router};
use module_api::{ConnInfo, Handler, Manifest, Out, StartContext, Verdict};

/// Everything this module serves lives under this path.
pub const PREFIX: &str = "/template_module/";

/// The methods routed to this module under [`PREFIX`]: the router answers
/// those it has no route for with 405, the rest never reach it.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Who the module is and what the host routes to it.
pub fn manifest() -> Manifest {
    METHODS
        .iter()
        .fold(
            Manifest::new("template_module", env!("CARGO_PKG_VERSION")),
            |m, method| m.bind(format!("{method} {PREFIX}")),
        )
        // `Router::new()` hands every request to the worker pool, and the
        // host accepts a deferral only from a module that declares it.
        // With `Router::inline()`, make this `false`.
        .defers(true)
}

/// What the handlers share: the module's settings.
pub struct State {
    greeting: String,
}

/// One generation of the module.
pub struct Module {
    router: Router<State>,
    state: State,
}

/// Builds a generation from `[modules.template_module]` (as JSON).
pub fn start(ctx: StartContext<'_>) -> Result<Module, String> {
    let greeting = match &ctx.config["greeting"] {
        v if v.is_null() => "hello from template_module".to_string(),
        value => value
            .as_str()
            .ok_or("greeting must be a string")?
            .to_string(),
    };
    let router = Router::new().get(PREFIX, hello);
    Ok(Module {
        router,
        state: State { greeting },
    })
}

/// `GET /template_module/` (and HEAD): the greeting.
fn hello(state: &State, _req: &Request<'_>) -> web::Result {
    Ok(Response::text(200, state.greeting.as_str()))
}

impl Handler for Module {
    fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
        self.router.on_message(&self.state, conn, input, out)
    }

    fn on_deferred(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
        self.router.on_deferred(&self.state, conn, input, out)
    }
}

module_api::export_module!(manifest = manifest, start = start);

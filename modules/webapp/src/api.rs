//! The JSON API under `/app/api/messages`.
//!
//! * `GET /app/api/messages?limit=&before=`: newest first,
//!   `{"messages": [...], "next_before": <id or null>}`; `next_before` is
//!   the `before` of the next (older) page while there is one.
//! * `POST /app/api/messages` with `{"author": …, "text": …}`: 201, the
//!   stored message, `Location` of its URL.
//! * `GET /app/api/messages/:id`: 200 or 404.
//! * `DELETE /app/api/messages/:id`: 204 or 404.
//!
//! Every error is `{"error": "<what is wrong>"}` (validation errors add
//! `"field"`): 400 for bad input, 404, 413 for a body over `max_body`, 415
//! for a body that is not JSON, 503 when the database stays busy.

use module_api::web::{self, Request, Response};
use serde::Serialize;
use serde_json::json;

use crate::app::App;
use crate::message::{Invalid, Message};

/// A refused message: 400 naming the field.
pub fn invalid(e: Invalid) -> Response {
    Response::json(400, &json!({ "error": e.message, "field": e.field }))
}

/// The `:id` route parameter: a positive integer, or 400.
pub fn message_id(req: &Request<'_>) -> Result<i64, Response> {
    match req.param("id").and_then(|s| s.parse::<i64>().ok()) {
        Some(id) if id > 0 => Ok(id),
        _ => Err(Response::error(400, "id must be a positive integer")),
    }
}

/// The `before` query parameter: a positive id, if given.
pub fn before_param(req: &Request<'_>) -> Result<Option<i64>, Response> {
    match req.query_as::<i64>("before")? {
        Some(b) if b < 1 => Err(Response::error(400, "before must be a positive id")),
        b => Ok(b),
    }
}

/// `GET /app/api/messages`.
pub fn list(app: &App, req: &Request<'_>) -> web::Result {
    let limit = match req.query_as::<i64>("limit")? {
        None => app.cfg.page_size,
        Some(n) if n < 1 => return Err(Response::error(400, "limit must be at least 1")),
        Some(n) => n.min(i64::from(app.cfg.max_page)) as u32,
    };
    let before = before_param(req)?;
    let mut messages = app
        .store
        .list(limit + 1, before)
        .map_err(|e| app.db_error(e))?;
    let more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    let next_before = messages.last().filter(|_| more).map(|m| m.id);
    Ok(Response::json(
        200,
        &Page {
            messages: &messages,
            next_before,
        },
    ))
}

/// One page of the list.
#[derive(Serialize)]
struct Page<'a> {
    messages: &'a [Message],
    next_before: Option<i64>,
}

/// `POST /app/api/messages`.
pub fn create(app: &App, req: &Request<'_>) -> web::Result {
    let body: serde_json::Value = req.json()?;
    let new = app.rules().from_json(&body).map_err(invalid)?;
    let m = app.store.insert(&new).map_err(|e| app.db_error(e))?;
    app.stats.posted();
    let location = format!("/app/api/messages/{}", m.id);
    Ok(Response::json(201, &m).header("Location", location))
}

/// `GET /app/api/messages/:id`.
pub fn get(app: &App, req: &Request<'_>) -> web::Result {
    let id = message_id(req)?;
    match app.store.get(id).map_err(|e| app.db_error(e))? {
        Some(m) => Ok(Response::json(200, &m)),
        None => Err(Response::error(404, format!("no message with id {id}"))),
    }
}

/// `DELETE /app/api/messages/:id`.
pub fn delete(app: &App, req: &Request<'_>) -> web::Result {
    let id = message_id(req)?;
    if app.store.delete(id).map_err(|e| app.db_error(e))? {
        app.stats.deleted();
        Ok(Response::new(204))
    } else {
        Err(Response::error(404, format!("no message with id {id}")))
    }
}

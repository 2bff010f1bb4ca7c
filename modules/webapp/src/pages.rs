//! The HTML side: the board at `/app/`, and the plain form posts it makes
//! (no JavaScript needed).
//!
//! * `GET /app/?before=<id>`: the page, newest first, `page_size` at a time.
//! * `POST /app/messages` (form `author`, `text`): stores the message and
//!   answers `303 See Other` to `/app/` (post/redirect/get, so reloading
//!   the page does not post twice); remembers the name in an `author`
//!   cookie. Invalid input: the page again with the error, status 400,
//!   the form still filled in.
//! * `POST /app/messages/:id/delete`: deletes, then 303 to `/app/`.
//! * `GET /app` (no slash): 301 to `/app/`.
//!
//! Pages are built with [`module_api::web::render`] and [`Html`]: every
//! piece of user text is escaped on the way in.

use module_api::web::{self, render, Cookie, Html, Request, Response, SameSite};

use crate::api::{before_param, message_id};
use crate::app::App;
use crate::message::Message;

const BOARD: &str = include_str!("../templates/board.html");

/// The cookie that remembers the poster's name.
const AUTHOR_COOKIE: &str = "author";

/// What the form shows besides the messages.
#[derive(Default)]
struct FormState<'a> {
    error: Option<&'a str>,
    author: &'a str,
    text: &'a str,
}

/// `GET /app`: the board lives at `/app/`.
pub fn to_board(_app: &App, req: &Request<'_>) -> web::Result {
    let location = match req.query_string() {
        Some(q) => format!("/app/?{q}"),
        None => "/app/".to_string(),
    };
    Ok(Response::redirect(301, &location))
}

/// `GET /app/`.
pub fn board(app: &App, req: &Request<'_>) -> web::Result {
    let before = before_param(req).map_err(|_| error_page(app, 400, "bad page link"))?;
    let author = req.cookie(AUTHOR_COOKIE).unwrap_or_default();
    let form = FormState {
        author: &author,
        ..FormState::default()
    };
    Ok(Response::html(200, page(app, before, &form)?))
}

/// `POST /app/messages`.
pub fn post(app: &App, req: &Request<'_>) -> web::Result {
    let form = req.form()?;
    let (author, text) = (form.get("author"), form.get("text"));
    match app.rules().from_form(author, text) {
        Ok(new) => {
            app.store.insert(&new).map_err(|e| app.db_error(e))?;
            app.stats.posted();
            let cookie = Cookie::new(AUTHOR_COOKIE, &new.author)
                .path("/app")
                .max_age(365 * 24 * 3600)
                .http_only()
                .same_site(SameSite::Lax);
            Ok(Response::redirect(303, "/app/").set_cookie(&cookie))
        }
        Err(e) => {
            let state = FormState {
                error: Some(&e.message),
                author: author.unwrap_or(""),
                text: text.unwrap_or(""),
            };
            Ok(Response::html(400, page(app, None, &state)?))
        }
    }
}

/// `POST /app/messages/:id/delete`.
pub fn delete(app: &App, req: &Request<'_>) -> web::Result {
    let id = message_id(req).map_err(|_| error_page(app, 400, "bad message id"))?;
    if app.store.delete(id).map_err(|e| app.db_error(e))? {
        app.stats.deleted();
        Ok(Response::redirect(303, "/app/"))
    } else {
        Err(error_page(
            app,
            404,
            "That message does not exist (any more).",
        ))
    }
}

/// The whole board page.
fn page(app: &App, before: Option<i64>, form: &FormState<'_>) -> Result<Html, Response> {
    let page_size = app.cfg.page_size;
    let mut messages = app
        .store
        .list(page_size + 1, before)
        .map_err(|e| app.db_error(e))?;
    let count = app.store.count().map_err(|e| app.db_error(e))?;
    let more = messages.len() > page_size as usize;
    messages.truncate(page_size as usize);

    let mut list = Html::new();
    for m in &messages {
        list.push(message_item(m));
    }
    if messages.is_empty() {
        list.markup("<li class=\"empty\">No messages yet.</li>\n");
    }
    let mut nav = Html::new();
    if before.is_some() {
        nav.markup("<a href=\"/app/\">Newest</a>");
    }
    if let Some(last) = messages.last().filter(|_| more) {
        nav.markup("<a class=\"older\" href=\"/app/?before=")
            .push(last.id)
            .markup("\">Older messages</a>");
    }
    let mut error = Html::new();
    if let Some(e) = form.error {
        error
            .markup("<p class=\"error\" role=\"alert\">")
            .push(e)
            .markup("</p>");
    }
    let count = match count {
        1 => "1 message".to_string(),
        n => format!("{n} messages"),
    };
    Ok(render(
        BOARD,
        &[
            ("title", &app.cfg.title),
            ("error", &error),
            ("author", &form.author),
            ("text", &form.text),
            ("max_author", &app.cfg.max_author),
            ("max_text", &app.cfg.max_text),
            ("count", &count),
            ("messages", &list),
            ("nav", &nav),
        ],
    ))
}

/// One message as a list item, with its delete button.
fn message_item(m: &Message) -> Html {
    // "2026-01-02T03:04:05.678Z" -> "2026-01-02 03:04 UTC"
    let shown = match (m.created_at.get(..10), m.created_at.get(11..16)) {
        (Some(d), Some(t)) => format!("{d} {t} UTC"),
        _ => m.created_at.clone(),
    };
    let mut h = Html::new();
    h.markup("<li id=\"m")
        .push(m.id)
        .markup("\"><div class=\"meta\"><strong>")
        .push(&m.author)
        .markup("</strong> <time datetime=\"")
        .push(&m.created_at)
        .markup("\">")
        .push(&shown)
        .markup("</time><form method=\"post\" action=\"/app/messages/")
        .push(m.id)
        .markup("/delete\"><button type=\"submit\">Delete</button></form></div><p class=\"text\">")
        .push(&m.text)
        .markup("</p></li>\n");
    h
}

/// A short HTML error page.
fn error_page(app: &App, status: u16, message: &str) -> Response {
    let mut h = Html::new();
    h.markup("<!doctype html>\n<html lang=\"en\"><meta charset=\"utf-8\"><title>")
        .push(&app.cfg.title)
        .markup("</title><p>")
        .push(message)
        .markup("</p><p><a href=\"/app/\">Back to the board</a></p></html>\n");
    Response::html(status, h)
}

//! The fixed replies the host itself writes, in the protocol of the module
//! a message was meant for: a malformed HTTP request, a message over
//! `max_message_size`, a module that is reloading or gone.

use abi_stable::std_types::RVec;
use module_api::Protocol;

/// The reply to bytes that look like an HTTP request but match no
/// binding (a malformed request line, an unknown method).
pub(super) fn bad_request(out: &mut RVec<u8>) {
    let body = b"400 Bad Request\n";
    module_api::http::start_response(out, 400, false);
    module_api::http::push_header(out, "Content-Type", b"text/plain; charset=utf-8");
    module_api::http::end_head(out, body.len() as u64);
    out.extend_from_copy_slice(body);
}

/// The protocol of one message: a module that speaks JSON-RPC may also
/// take it over HTTP (the rpc module's `POST /rpc`), so a message that
/// starts like an HTTP request is answered in HTTP.
pub(super) fn message_protocol(module: Protocol, message: &[u8]) -> Protocol {
    if module == Protocol::JsonRpc && crate::router::looks_like_http(message) {
        Protocol::Http
    } else {
        module
    }
}

/// The reply to a message over `max_message_size`, before the host closes
/// the connection.
pub(super) fn too_large(out: &mut RVec<u8>, protocol: Protocol) {
    match protocol {
        Protocol::Http => {
            let body = b"413 Content Too Large: the request exceeds the server's max_message_size\n";
            module_api::http::start_response(out, 413, false);
            module_api::http::push_header(out, "Content-Type", b"text/plain; charset=utf-8");
            module_api::http::end_head(out, body.len() as u64);
            out.extend_from_copy_slice(body);
        }
        Protocol::JsonRpc => out.extend_from_copy_slice(
            br#"{"jsonrpc":"2.0","error":{"code":-32040,"message":"message over the server's max_message_size; closing"},"id":null}
"#,
        ),
        Protocol::Raw => {}
    }
}

/// The reply for a prefix whose module is reloading or gone.
pub(super) fn unavailable(out: &mut RVec<u8>, protocol: Protocol) {
    match protocol {
        Protocol::Http => {
            let body = b"503 Service Unavailable: the module is reloading or removed\n";
            module_api::http::start_response(out, 503, false);
            module_api::http::push_header(out, "Retry-After", b"1");
            module_api::http::push_header(out, "Content-Type", b"text/plain; charset=utf-8");
            module_api::http::end_head(out, body.len() as u64);
            out.extend_from_copy_slice(body);
        }
        Protocol::JsonRpc => out.extend_from_copy_slice(
            br#"{"jsonrpc":"2.0","error":{"code":-32001,"message":"service unavailable, retry"},"id":null}
"#,
        ),
        Protocol::Raw => {}
    }
}

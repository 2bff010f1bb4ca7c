//! `bus.publish`: hands `{data}` to the subscribers of `{topic}` and
//! answers how many there are. The `bus.message` line is built once for
//! all of them; in the writer it is delivered once the batch commits.
//! Needs `publish` on the topic.
//!
//! A publish to the reply subject of a waiting `bus.request` answers it
//! (and counts 1); that needs no `publish` right, since the random
//! subject is the capability. Any other `_INBOX.` subject is an ordinary
//! topic.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::access::Right;
use crate::bus::{self, check_topic, Note};
use crate::jsonrpc::{Request, RpcError, Sink};
use crate::store::stored_text;
use crate::subject::INBOX_PREFIX;

use super::env::Env;
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishP<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Runs `bus.publish`: writes the number of recipients.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: PublishP<'_> = params(req)?;
    check_topic(&p.topic, false)?;
    // `data` is passed through as sent (serde_json checked that it is
    // JSON); only a value spread over several lines is rewritten as one.
    let multiline = memchr::memchr2(b'\n', b'\r', p.data.get().as_bytes()).is_some();
    if p.topic.starts_with(INBOX_PREFIX) {
        let core = env.core;
        let answered = if multiline {
            core.inbox.answer(core, &p.topic, &stored_text(p.data))
        } else {
            core.inbox.answer(core, &p.topic, p.data.get())
        };
        if answered {
            out.put(b"1");
            return Ok(());
        }
    }
    env.who.check(Right::Publish, &req.method, &p.topic)?;
    super::stream_publish::store_covered(env, &p.topic, p.data)?;
    let topic_conns = env.core.bus.recipients(&p.topic);
    // Built once for every recipient (nothing when there is none).
    let bytes = if topic_conns.is_empty() {
        Vec::new()
    } else if multiline {
        bus::message(&p.topic, &stored_text(p.data))
    } else {
        bus::message(&p.topic, p.data.get())
    };
    let note = Note { topic_conns, bytes };
    let n = match &mut env.later {
        Some(later) => {
            let n = note.topic_conns.len();
            later.push(note);
            n
        }
        None => env.core.deliver(&note),
    };
    put_count(out, n);
    Ok(())
}

/// Writes `n` in decimal, without the allocation of `to_string` (this
/// runs once per publish).
fn put_count<S: Sink>(out: &mut S, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use crate::access::{Peer, Who};
    use crate::config::Config;
    use crate::core::Core;
    use crate::entry::Overlay;
    use crate::host::HostApi;
    use crate::jsonrpc;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run};
    use crate::methods::{eval_message, Env};
    use crate::store::Store;
    use module_api::CallStatus;

    #[test]
    fn counts_are_written_in_decimal() {
        for n in [0, 7, 10, 300, usize::MAX] {
            let mut out = Vec::new();
            super::put_count(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn counts_the_recipients_of_a_concrete_topic() {
        let (core, _dir) = crate::testing::core();
        core.bus.subscribe(7, &["a.*".to_string()]).unwrap();
        core.bus
            .subscribe(8, &["a.>".to_string(), "a.b".to_string()])
            .unwrap();
        let db = open(&core);
        let mut o = Overlay::default();
        let mut publish = |p: &str| run(&core, &db, &mut o, 0, &req("bus.publish", p));
        assert_eq!(
            publish(r#"{"topic":"a.b","data":{"x":1}}"#)["result"],
            2,
            "each once"
        );
        assert_eq!(publish(r#"["a.b.c", 1]"#)["result"], 1);
        assert_eq!(publish(r#"["z", 1]"#)["result"], 0);
        let v = publish(r#"{"topic":"a.*","data":1}"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "a pattern: {v}");
    }

    /// Records every `push_many` call.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<(Vec<u64>, usize)>>);

    impl HostApi for Recorder {
        fn push_many(&self, conns: &[u64], data: &[u8], _notice: &[u8]) -> usize {
            self.0.lock().unwrap().push((conns.to_vec(), data.len()));
            conns.len()
        }
        fn call(&self, _module: &str, _input: &[u8]) -> Result<Vec<u8>, CallStatus> {
            Err(CallStatus::NoSuchModule)
        }
        fn wait_begin(&self) -> u64 {
            0
        }
        fn wait_end(&self, _token: u64) {}
        fn peer_identity(&self, _conn: u64) -> Vec<String> {
            Vec::new()
        }
    }

    #[test]
    fn a_publish_is_one_push_for_all_its_recipients() {
        let host: &'static Recorder = Box::leak(Box::default());
        let dir = crate::testdir::TestDir::new("publish");
        let cfg = Config::from_json(&serde_json::json!({}), dir.path()).unwrap();
        let store = Store::new(&cfg.db, cfg.cache_bytes);
        let core = Core::new(cfg, store, host).unwrap();
        for conn in 1..=300 {
            core.bus.subscribe(conn, &["wide.*".to_string()]).unwrap();
        }
        core.bus.subscribe(7, &["wide.>".to_string()]).unwrap();
        let data = format!("\"{}\"", "d".repeat(900 * 1024));
        let line = format!(
            r#"{{"jsonrpc":"2.0","method":"bus.publish","params":{{"topic":"wide.x","data":{data}}},"id":1}}"#
        );
        let map = core.store.read();
        let mut env = Env::reading(&core, &map, 0, Who::Internal, Peer::UNKNOWN);
        let mut out = Vec::new();
        eval_message(&mut env, &jsonrpc::parse(line.as_bytes(), 10), &mut out);
        assert_eq!(out, br#"{"jsonrpc":"2.0","result":300,"id":1}"#);
        let calls = host.0.lock().unwrap();
        assert_eq!(calls.len(), 1, "one push for every recipient");
        let (mut conns, len) = calls[0].clone();
        assert!(len > 900 * 1024 && len < 900 * 1024 + 100);
        conns.sort_unstable();
        assert_eq!(conns, (1..=300).collect::<Vec<u64>>(), "each once");
    }
}

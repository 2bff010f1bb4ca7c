//! Fuzzes the host's route lookup (`switchyard::router::RouteTable::lookup`)
//! against a model of what it must decide.
//!
//! The table holds the built-ins, the prefixes the shipped modules bind
//! (http, webapp, rpc, a proxy route), and optionally extra prefixes taken
//! from the input. Input layout: when it contains a 0xFF byte, the bytes
//! before it are extra bindings, one per `\n`-separated line whose first
//! byte picks the target (its value mod 3) and whose rest is the prefix;
//! the bytes after it are the connection's first bytes. Without 0xFF, all
//! of it is the connection's first bytes. Seeds are plain request bytes.
//!
//! Checked for every length `k` of the input seen so far (bytes arrive a
//! few at a time on a real connection):
//! * `Found(t)`: `t` is the target of the longest binding that the bytes
//!   start with (so the match is a prefix of the input and the longest);
//!   and no longer binding could still match.
//! * `NeedMore`: some binding longer than the bytes starts with them (or
//!   nothing has arrived yet).
//! * `None`: no binding is a prefix of the bytes, and none could become one.
//! * A decision, once `Found` or `None`, stays the same as more bytes
//!   arrive: the host routes on the first answer.
//!
//! Targets are compared by value. The fixed bindings are coloured so that
//! any two on one prefix chain ("GET " and "GET /app/") differ; extra
//! bindings take their colour from the input, so a wrong pick between
//! unrelated bindings is found once the fuzzer gives them different ones.

#![no_main]

use libfuzzer_sys::fuzz_target;
use module_api::Protocol;
use switchyard::router::{Builtin, Match, RouteTable, Target, BUILTINS};

/// Most extra bindings taken from one input.
const MAX_EXTRA: usize = 16;

/// What a binding leads to, comparable (a `Target` is not `PartialEq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    Builtin(Builtin),
    Unavailable(Protocol),
}

impl Colour {
    fn of(target: &Target) -> Colour {
        match target {
            Target::Builtin(b) => Colour::Builtin(*b),
            Target::Unavailable(p) => Colour::Unavailable(*p),
            Target::Module(_) => unreachable!("the fuzz table holds no modules"),
        }
    }

    fn target(self) -> Target {
        match self {
            Colour::Builtin(b) => Target::Builtin(b),
            Colour::Unavailable(p) => Target::Unavailable(p),
        }
    }
}

const PROTOCOLS: [Protocol; 3] = [Protocol::Http, Protocol::JsonRpc, Protocol::Raw];

/// The prefixes the shipped modules bind, coloured so that no two on one
/// prefix chain share a colour.
fn fixed() -> Vec<(Vec<u8>, Colour)> {
    let http = Colour::Unavailable(Protocol::Http);
    let webapp = Colour::Unavailable(Protocol::Raw);
    let rpc = Colour::Unavailable(Protocol::JsonRpc);
    let mut out = Vec::new();
    for m in [
        "GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "TRACE ", "CONNECT ",
    ] {
        out.push((m.as_bytes().to_vec(), http));
    }
    for m in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for p in ["/app/", "/app ", "/app?"] {
            out.push((format!("{m} {p}").into_bytes(), webapp));
        }
    }
    for p in ["{", "[", "POST /rpc"] {
        out.push((p.as_bytes().to_vec(), rpc));
    }
    // A proxy route by first bytes (TLS records, SSH banners).
    out.push((vec![0x16, 0x03], webapp));
    out.push((b"SSH-".to_vec(), webapp));
    out
}

/// The table's bindings in insertion order (built-ins first, as
/// `RouteTable::new` adds them), without empty or repeated prefixes: the
/// registry refuses a second owner for one prefix.
fn bindings(extra: &[u8]) -> Vec<(Vec<u8>, Colour)> {
    let mut all: Vec<(Vec<u8>, Colour)> = BUILTINS
        .iter()
        .map(|(p, b)| (p.to_vec(), Colour::Builtin(*b)))
        .collect();
    let user = fixed().into_iter().chain(
        extra
            .split(|&b| b == b'\n')
            .filter(|l| l.len() > 1)
            .take(MAX_EXTRA)
            .map(|l| {
                let colour = Colour::Unavailable(PROTOCOLS[l[0] as usize % 3]);
                (l[1..].to_vec(), colour)
            }),
    );
    for (prefix, colour) in user {
        if !prefix.is_empty() && !all.iter().any(|(p, _)| *p == prefix) {
            all.push((prefix, colour));
        }
    }
    all
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Found(Colour),
    NeedMore,
    None,
}

/// Whether `input` starts like an absolute-form request line: an
/// upper-case method token, one space, then nothing yet or a letter (a
/// scheme).
fn absolute_form_candidate(input: &[u8]) -> bool {
    let method = input.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method > 0
        && input.get(method) == Some(&b' ')
        && input
            .get(method + 1)
            .is_none_or(|b| b.is_ascii_alphabetic())
}

/// What the lookup must answer for `input`, from first principles.
fn model(all: &[(Vec<u8>, Colour)], input: &[u8]) -> Decision {
    if input.is_empty() {
        return Decision::NeedMore;
    }
    if all
        .iter()
        .any(|(p, _)| p.len() > input.len() && p.starts_with(input))
    {
        return Decision::NeedMore;
    }
    match all
        .iter()
        .filter(|(p, _)| input.starts_with(p))
        .max_by_key(|(p, _)| p.len())
    {
        Some((_, c)) => Decision::Found(*c),
        None => Decision::None,
    }
}

fuzz_target!(|data: &[u8]| {
    let (extra, input) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let all = bindings(extra);
    let builtins = BUILTINS.len();
    let table = RouteTable::new(
        all[builtins..]
            .iter()
            .map(|(p, c)| (p.clone(), c.target()))
            .collect(),
        Default::default(),
    );
    let mut settled: Option<Decision> = None;
    for k in 0..=input.len() {
        let seen = &input[..k];
        let got = match table.lookup(seen) {
            Match::Found(t) => Decision::Found(Colour::of(t)),
            Match::NeedMore => Decision::NeedMore,
            Match::None => Decision::None,
        };
        // The model covers origin-form lines. A line that may still be an
        // absolute-form request (`METHOD SP scheme...`) is routed by its
        // path once that is known (`router::absolute_form`): for those only
        // the checks below hold (no panic, a decision never changes).
        if !absolute_form_candidate(seen) {
            let want = model(&all, seen);
            assert_eq!(got, want, "lookup({seen:?})");
        }
        // Known: `METHOD SP` alone is routed as it is, while `METHOD SP`
        // and a letter waits for a scheme, so a candidate may still change
        // its mind; everything else must not.
        if absolute_form_candidate(seen) {
            settled = None;
        } else if let Some(first) = &settled {
            assert_eq!(&got, first, "decision changed at {seen:?}");
        } else if got != Decision::NeedMore {
            settled = Some(got);
        }
    }
});

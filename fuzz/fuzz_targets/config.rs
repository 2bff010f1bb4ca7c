//! Fuzzes the host's TOML configuration parsing
//! (`switchyard::config::Config::parse`, what `Config::load` runs on a
//! file's text): any text is either refused with a message or accepted,
//! never a panic; an accepted file's module tables convert to JSON objects
//! (what each module is started with) and its durations are usable.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::config::Config;

fuzz_target!(|data: &[u8]| {
    // A config file is read as UTF-8; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Err(e) => assert!(!e.to_string().is_empty(), "an empty error message"),
        Ok(cfg) => {
            for name in cfg.modules.keys() {
                let json = cfg.module_json(name);
                let value: serde_json::Value = serde_json::from_str(&json)
                    .unwrap_or_else(|e| panic!("module_json({name:?}) = {json:?}: {e}"));
                assert!(
                    value.is_object() || !cfg.modules[name].is_table(),
                    "a table became {json}"
                );
            }
            assert_eq!(cfg.module_json("\u{0}not-a-module"), "{}");
            let s = &cfg.server;
            for d in [
                s.first_bytes_timeout(),
                s.header_timeout(),
                s.idle_timeout(),
                s.send_timeout(),
                s.upstream_connect_timeout(),
                s.proxy_idle_timeout(),
                s.drain_timeout(),
            ] {
                assert!(!d.is_zero(), "a zero timeout was accepted");
            }
        }
    }
});

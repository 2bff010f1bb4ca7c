//! [`Rpc`], one generation of the module, and the retiring side of a
//! reload's handover: the steps that freeze it, let a successor claim it
//! and resume it when nobody did, each with the gate write-locked. The
//! messages that travel between generations are [`crate::handoff`]'s; the
//! transports ([`crate::raw`], [`crate::post`]) and the host's entry
//! points (`lib.rs`) sit above this file.

use std::sync::Arc;
use std::time::Instant;

use crate::core::Core;
use crate::types::Mode;
use crate::writer::Writer;

/// One generation of the module.
pub struct Rpc {
    pub core: Arc<Core>,
    pub writer: Writer,
    /// The handover's progress (changed with the gate write-locked).
    pub handover: std::sync::Mutex<Handover>,
    /// Secret shared by the generations for internal calls.
    pub token: String,
}

/// The retiring side of a handover, guarded by the gate's write lock.
#[derive(Debug, Default)]
pub struct Handover {
    /// When `save_state` froze this generation.
    pub frozen_at: Option<Instant>,
    /// A successor has claimed the state.
    pub claimed: bool,
}

/// The retiring side's steps, each with the gate write-locked.
impl Rpc {
    fn gate(&self) -> std::sync::RwLockWriteGuard<'_, Mode> {
        self.core.gate.write().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn live(&self) -> bool {
        matches!(self.core.gate.try_read().as_deref(), Ok(Mode::Live))
    }

    /// The mode to go back to after a handover that did not happen.
    fn unfrozen(&self) -> Mode {
        if self
            .core
            .owner_fd
            .load(std::sync::atomic::Ordering::Acquire)
            >= 0
        {
            Mode::Live
        } else {
            Mode::Standby
        }
    }

    fn handover(&self) -> std::sync::MutexGuard<'_, Handover> {
        self.handover.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Freezes this generation for a handover (see [`crate::handoff`]); returns
    /// the mode it was in.
    pub(crate) fn freeze(&self) -> Mode {
        let mut gate = self.gate();
        let was = std::mem::replace(&mut *gate, Mode::Frozen);
        *self.handover() = Handover {
            frozen_at: Some(std::time::Instant::now()),
            claimed: false,
        };
        was
    }

    /// A successor claims the state: `false` if this generation is not
    /// frozen (it resumed, or was never asked to hand over).
    pub(crate) fn claim(&self) -> bool {
        let gate = self.gate();
        let frozen = *gate == Mode::Frozen;
        if frozen {
            self.handover().claimed = true;
        }
        frozen
    }

    /// Serves again: the successor failed to start.
    pub(crate) fn resume(&self) {
        let mut gate = self.gate();
        *gate = self.unfrozen();
        *self.handover() = Handover::default();
    }

    /// Serves again if no successor claimed the handover in time (the host
    /// gave up on the reload before starting one). Returns whether it did.
    pub fn resume_if_abandoned(&self) -> bool {
        let mut gate = self.gate();
        let h = self.handover();
        let abandoned = *gate == Mode::Frozen
            && !h.claimed
            && h.frozen_at
                .is_some_and(|t| t.elapsed() >= self.core.cfg.handoff_timeout());
        drop(h);
        if abandoned {
            log::warn!(
                "no new generation claimed the handover within {:?}; serving again",
                self.core.cfg.handoff_timeout()
            );
            *gate = self.unfrozen();
            *self.handover() = Handover::default();
        }
        abandoned
    }
}

#[cfg(test)]
mod tests {
    use module_api::Handler;

    use super::*;
    use crate::testing::NullHost;

    #[test]
    fn handover_claim_resume_and_abandon() {
        let dir = crate::testdir::TestDir::new("handover");
        let cfg = serde_json::json!({"handoff_timeout_ms": 50});
        let rpc = Rpc::start(&cfg, dir.path(), b"", &NullHost).unwrap();
        rpc.core.bus.subscribe(7, &["a.*".to_string()]).unwrap();
        rpc.core.conns.put_back(
            7,
            crate::conns::ConnState {
                partial: b"{\"par".to_vec(),
                ..Default::default()
            },
        );

        let state = rpc.save_state();
        assert!(!rpc.live());
        assert!(rpc.claim());
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(
            !rpc.resume_if_abandoned(),
            "a claimed handover never resumes by itself"
        );
        rpc.resume();
        assert!(rpc.live());

        rpc.save_state();
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(rpc.resume_if_abandoned(), "nobody claimed it");
        assert!(rpc.live());
        assert!(!rpc.claim(), "a late claim is refused");

        // A successor starts from the state: same token, subscriptions and
        // partial lines.
        let next = Rpc::start(&cfg, dir.path(), &state, &NullHost).unwrap();
        assert_eq!(next.token, rpc.token);
        assert_eq!(next.core.bus.recipients("a.b"), [7]);
        assert_eq!(next.core.conns.partial_kind(7), Some(false));
        rpc.stop();
        next.stop();
    }
}

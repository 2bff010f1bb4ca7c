//! The process model: a leader process that holds the listening sockets
//! and runs one worker (this same binary) at a time, replacing it when it
//! crashes, hangs in module code, or asks to be replaced.
//!
//! * [`leader`]: the leader's loop: starting workers, reaping them,
//!   blaming a crash on a module (and quarantining it), the hang check.
//! * [`worker`]: the worker's side of the control link: what it inherited
//!   and the lines it sends (`ready`).
//! * [`upgrade`]: a worker asking to be replaced (`UPGRADE`, or too much
//!   memory held by retired generations).
//!
//! The call guard that records which module a worker's threads are in
//! lives in [`crate::guard`], the quarantine list in [`crate::quarantine`].
//! With `--single` there is no leader and every worker-side function is a
//! no-op.

pub mod leader;
pub mod upgrade;
pub mod worker;

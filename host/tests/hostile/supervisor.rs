//! Hostile clients: supervisor.

#[allow(unused_imports)]
use crate::common;

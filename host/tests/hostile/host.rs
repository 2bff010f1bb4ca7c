//! Hostile clients: host.

#[allow(unused_imports)]
use crate::common;

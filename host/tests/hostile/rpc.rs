//! Hostile clients: rpc.

#[allow(unused_imports)]
use crate::common;

//! Hostile clients: the kv store (limits, memory, disk, waits).

#[allow(unused_imports)]
use crate::common;

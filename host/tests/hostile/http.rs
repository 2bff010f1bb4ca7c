//! Hostile clients: http.

#[allow(unused_imports)]
use crate::common;

//! What the module needs from the host ([`HostApi`]: the real
//! [`module_api::Host`], or a stand-in in unit tests) and [`wait`], the
//! one way to wait for another thread without being taken for a hang. A
//! leaf: it imports nothing from the crate.

use module_api::CallStatus;

/// What the module needs from the host (the real [`module_api::Host`], or
/// a stand-in in unit tests).
pub trait HostApi: Send + Sync {
    /// Queues the same bytes on many connections; the host copies them
    /// once. Returns how many of them exist. Never blocks.
    fn push_many(&self, conns: &[u64], data: &[u8], notice: &[u8]) -> usize;
    /// Calls the current generation of a module in-process (blocks).
    fn call(&self, module: &str, input: &[u8]) -> Result<Vec<u8>, CallStatus>;
    /// Starts a wait on another thread that is not a hang (see [`wait`]).
    fn wait_begin(&self) -> u64;
    /// Ends a wait started by [`HostApi::wait_begin`].
    fn wait_end(&self, token: u64);
    /// The names on connection `conn`'s verified client certificate (CN
    /// first, then SANs); empty without one.
    fn peer_identity(&self, conn: u64) -> Vec<String>;
}

impl HostApi for module_api::Host {
    fn push_many(&self, conns: &[u64], data: &[u8], notice: &[u8]) -> usize {
        module_api::Host::push_many(self, conns, data, notice)
    }
    fn call(&self, module: &str, input: &[u8]) -> Result<Vec<u8>, CallStatus> {
        module_api::Host::call(self, module, input)
    }
    fn wait_begin(&self) -> u64 {
        self.raw().wait_begin()
    }
    fn wait_end(&self, token: u64) {
        self.raw().wait_end(token)
    }
    fn peer_identity(&self, conn: u64) -> Vec<String> {
        self.raw()
            .peer_identity(conn)
            .into_iter()
            .map(|s| s.into_string())
            .collect()
    }
}

/// Runs `f`, a wait for another thread (the writer's commit, a successor
/// during a hand-over), with the host's hang detection paused for the
/// calling thread: a slow commit is not a stuck module. Only the wait
/// goes inside; computation stays outside, where a real hang is caught.
pub fn wait<T>(host: &dyn HostApi, f: impl FnOnce() -> T) -> T {
    struct End<'a>(&'a dyn HostApi, u64);
    impl Drop for End<'_> {
        fn drop(&mut self) {
            self.0.wait_end(self.1);
        }
    }
    let _end = End(host, host.wait_begin());
    f()
}

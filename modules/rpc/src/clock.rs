//! [`Clock`]: one timer thread per generation (`rpc-clock`) for what must
//! happen later without a connection asking: a `bus.request` that times
//! out, a stream message whose `ack_wait` ran out, a WebSocket ping.
//!
//! The host has no timer service (adding one would change the module
//! ABI), and blocking a pool thread per waiting request would let 2 slow
//! requests take a 2-thread pool. So the module keeps its own thread,
//! started with the generation and joined by [`Clock::stop`], as the
//! writer is: a reload leaks no thread.
//!
//! A timer is a closure. It runs on the clock thread and must not block:
//! push with the host (which never waits) or hand the work to the writer.
//! Closures hold a `Weak` to what they touch, never an `Arc<Core>` (the
//! core owns the clock: an `Arc` would be a cycle until `stop`).
//!
//! Cancelling is O(1): the entry stays in the heap and is skipped when it
//! comes up (its id is no longer live); when such entries outnumber the
//! live ones by far, the heap is rebuilt without them. A panicking timer is caught and
//! logged; the clock goes on.

use std::collections::{BinaryHeap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the clock TTLs and stream times are
/// measured on.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Cancelled entries the heap may hold beyond twice the live ones.
const COMPACT_SLACK: usize = 4096;

/// What a timer does when it fires.
pub type Task = Box<dyn FnOnce() + Send + 'static>;

/// Names a timer, to [`Clock::cancel`] it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

struct Entry {
    at: Instant,
    id: TimerId,
    task: Task,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: the earliest deadline (then the oldest id) is the heap's top.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.id).cmp(&(self.at, self.id))
    }
}

#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Entry>,
    /// The ids still due to run (not fired, not cancelled).
    live: HashSet<TimerId>,
    next: u64,
    stopping: bool,
}

struct Inner {
    timers: Mutex<Timers>,
    wake: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Timers> {
        self.timers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One generation's timer thread.
pub struct Clock {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Clock {
    /// Starts the `rpc-clock` thread.
    pub fn start() -> Result<Clock, String> {
        let inner = Arc::new(Inner {
            timers: Mutex::new(Timers::default()),
            wake: Condvar::new(),
        });
        let run = inner.clone();
        let thread = std::thread::Builder::new()
            .name("rpc-clock".into())
            .spawn(move || tick(&run))
            .map_err(|e| format!("cannot start the rpc-clock thread: {e}"))?;
        Ok(Clock {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `task` on the clock thread at `at` (at once if that has
    /// passed) unless cancelled first. After [`Clock::stop`] the task is
    /// dropped unrun.
    pub fn at(&self, at: Instant, task: Task) -> TimerId {
        let mut t = self.inner.lock();
        t.next += 1;
        let id = TimerId(t.next);
        if t.stopping {
            return id;
        }
        let earliest = t.heap.peek().map_or(true, |e| at < e.at);
        t.live.insert(id);
        t.heap.push(Entry { at, id, task });
        drop(t);
        if earliest {
            self.inner.wake.notify_one();
        }
        id
    }

    /// [`Clock::at`] `after` from now.
    pub fn after(&self, after: Duration, task: Task) -> TimerId {
        self.at(Instant::now() + after, task)
    }

    /// Cancels a timer: `true` if it had not fired yet (it never will).
    pub fn cancel(&self, id: TimerId) -> bool {
        let mut t = self.inner.lock();
        let was = t.live.remove(&id);
        // Cancelled entries wait in the heap for their deadline; when they
        // outnumber the live ones, drop them, so that memory follows the
        // timers due, not the rate of cancelling (every answered request
        // and most acks cancel one).
        if t.heap.len() > 2 * t.live.len() + COMPACT_SLACK {
            let Timers { heap, live, .. } = &mut *t;
            heap.retain(|e| live.contains(&e.id));
        }
        was
    }

    /// How many timers are due.
    pub fn pending(&self) -> usize {
        self.inner.lock().live.len()
    }

    /// Stops the thread and drops every timer unrun; waits for a task that
    /// is running. Idempotent.
    pub fn stop(&self) {
        {
            let mut t = self.inner.lock();
            t.stopping = true;
            t.live.clear();
            // Dropped outside the lock below: a task's captures may
            // have destructors of their own.
            let heap = std::mem::take(&mut t.heap);
            drop(t);
            drop(heap);
        }
        self.inner.wake.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The clock thread: sleep until the earliest deadline, run what is due.
fn tick(inner: &Inner) {
    let mut t = inner.lock();
    loop {
        if t.stopping {
            return;
        }
        let now = Instant::now();
        match t.heap.peek() {
            None => t = inner.wake.wait(t).unwrap_or_else(|e| e.into_inner()),
            Some(e) if e.at > now => {
                let wait = e.at - now;
                t = inner
                    .wake
                    .wait_timeout(t, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            Some(_) => {
                let Some(e) = t.heap.pop() else { continue };
                if !t.live.remove(&e.id) {
                    continue; // cancelled
                }
                drop(t);
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(e.task)).is_err() {
                    log::error!("a timer task panicked; the clock goes on");
                }
                t = inner.lock();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn fires_in_deadline_order() {
        let clock = Clock::start().unwrap();
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        for (i, ms) in [(3, 30u64), (1, 10), (2, 20)] {
            let tx = tx.clone();
            clock.at(
                now + Duration::from_millis(ms),
                Box::new(move || tx.send(i).unwrap()),
            );
        }
        let got: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, [1, 2, 3]);
        assert!(now.elapsed() >= Duration::from_millis(30));
        assert_eq!(clock.pending(), 0);
        clock.stop();
    }

    #[test]
    fn a_cancelled_timer_never_runs() {
        let clock = Clock::start().unwrap();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let id = clock.after(
            Duration::from_millis(20),
            Box::new(move || tx2.send("cancelled").unwrap()),
        );
        clock.after(
            Duration::from_millis(40),
            Box::new(move || tx.send("kept").unwrap()),
        );
        assert!(clock.cancel(id));
        assert!(!clock.cancel(id), "only once");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "kept");
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }

    #[test]
    fn a_past_deadline_fires_at_once_and_a_panic_does_not_stop_the_clock() {
        let clock = Clock::start().unwrap();
        let (tx, rx) = mpsc::channel();
        clock.at(Instant::now(), Box::new(|| panic!("boom")));
        clock.at(
            Instant::now() - Duration::from_secs(1),
            Box::new(move || tx.send(()).unwrap()),
        );
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn cancelled_timers_do_not_pile_up() {
        let clock = Clock::start().unwrap();
        let kept = clock.after(Duration::from_secs(3600), Box::new(|| ()));
        for _ in 0..3 * COMPACT_SLACK {
            let id = clock.after(Duration::from_secs(3600), Box::new(|| ()));
            assert!(clock.cancel(id));
        }
        let heap = clock.inner.lock().heap.len();
        assert!(heap <= COMPACT_SLACK + 3, "{heap} entries for 1 live timer");
        assert_eq!(clock.pending(), 1);
        assert!(clock.cancel(kept));
    }

    #[test]
    fn stop_joins_and_drops_what_is_left() {
        let clock = Clock::start().unwrap();
        let flag = Arc::new(());
        let held = flag.clone();
        clock.after(Duration::from_secs(3600), Box::new(move || drop(held)));
        assert_eq!(Arc::strong_count(&flag), 2);
        clock.stop();
        assert_eq!(Arc::strong_count(&flag), 1, "the task was dropped unrun");
        assert_eq!(clock.pending(), 0);
        // After stop, new timers are dropped.
        let (tx, rx) = mpsc::channel::<()>();
        clock.at(Instant::now(), Box::new(move || tx.send(()).unwrap()));
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        clock.stop();
    }
}

//! How many module calls each thread has finished: state kept for the
//! duration of one call (the push batches of [`crate::services`]) tells
//! from this count that its call is over, so the code that makes calls
//! ([`crate::generation`]) only counts and needs to know nothing of it.
//! A leaf.

use std::cell::Cell;

thread_local! {
    static FINISHED: Cell<u64> = const { Cell::new(0) };
}

/// A module call on this thread returned.
pub fn finished() {
    // `try_with`: harmless during a thread's teardown.
    let _ = FINISHED.try_with(|c| c.set(c.get().wrapping_add(1)));
}

/// The calls this thread has finished so far: what was made during a call
/// belongs to it while this has not changed.
pub fn finished_so_far() -> u64 {
    FINISHED.try_with(Cell::get).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_per_thread() {
        let before = super::finished_so_far();
        super::finished();
        assert_eq!(super::finished_so_far(), before + 1);
        let other = std::thread::spawn(super::finished_so_far).join().unwrap();
        assert_eq!(other, 0);
    }
}

//! Runs a test body on a glommio executor of its own (the WAL lives on one).

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement};

/// Runs `body` on a fresh executor and returns its result.
pub fn run<T, F>(body: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .spawn(body)
        .expect("glommio executor starts (io_uring available?)")
        .join()
        .expect("test body")
}

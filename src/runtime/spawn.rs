//! The one way tripline spawns tasks and threads.
//!
//! Tasks are wrapped in [`TaskHandle`], which aborts the task when dropped, so a failed or
//! cancelled pipeline cannot leave work running behind it. `clippy.toml` forbids calling
//! `tokio::spawn` anywhere else.

use std::future::Future;

use tokio::task::JoinHandle;

/// A spawned task that is aborted when this handle is dropped.
#[derive(Debug)]
pub struct TaskHandle<T>(Option<JoinHandle<T>>);

/// Spawns `fut` on the current tokio runtime; the task is aborted when the handle drops.
#[allow(clippy::disallowed_methods)]
pub fn spawn<F>(fut: F) -> TaskHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    TaskHandle(Some(tokio::spawn(fut)))
}

impl<T> TaskHandle<T> {
    /// Waits for the task. A panic in the task is resumed here.
    ///
    /// # Panics
    /// Resumes the task's panic.
    pub async fn join(mut self) -> Option<T> {
        let h = self.0.take()?;
        match h.await {
            Ok(v) => Some(v),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        }
    }
}

impl<T> TaskHandle<T> {
    /// Aborts the task and waits until it has stopped (its future dropped).
    pub async fn abort_and_wait(mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Spawns a named OS thread for blocking work (file reading, encoding). The thread must exit by
/// itself when its channels close.
///
/// # Panics
/// When the OS cannot create a thread.
pub fn thread<F, T>(name: String, f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("spawning a thread")
}

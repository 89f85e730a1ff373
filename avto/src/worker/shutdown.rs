//! Waiting on a stop flag, a `watch<bool>` that turns `true` once: the worker's shutdown, a
//! task's cancellation. A leaf module, so every loop can use it without importing another.

use std::time::Duration;

use tokio::sync::watch;

/// Resolves once the flag is `true` (or its sender is gone).
pub(crate) async fn until_set(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Sleep for `d` unless shutdown; `false` when shutting down.
pub(crate) async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = until_set(shutdown) => return false,
    }
    !*shutdown.borrow()
}

//! Giving the heap's free pages back to the system after the router parks connections.
//!
//! A parked connection lets go of its hyper buffers (16 KiB and more), but glibc's allocator
//! returns free memory to the system only from the top of its heap: the freed buffers sit
//! between the small allocations each open connection keeps (its task, its socket's
//! registration), so their pages stayed resident. `malloc_trim` gives back every whole free
//! page wherever it is. Measured (docs/decisions/0027): 1,000 parked connections, 26.6 MiB
//! resident before and 19.4 after. Other allocators were tried instead and held more
//! (mimalloc 21.6 MiB with no connection at all; jemalloc 20.4 with 1,000 parked).

use std::sync::Arc;
use std::time::Duration;

use cohort_router::proxy::Router;

/// How often the router looks whether connections were parked since it last gave memory back.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Gives free heap pages back whenever connections were parked in the last interval. Runs
/// until the runtime stops.
pub async fn give_back_after_parking(router: Arc<Router>) {
    let mut seen = router.metrics.parks.get();
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let parks = router.metrics.parks.get();
        if parks != seen {
            seen = parks;
            trim();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena while it
    // walks it); it only releases pages no allocation is using.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other C libraries (musl) return freed memory on their own or have no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

//! Named pause points for the kill tests (debug builds only).
//!
//! A debug build started with `WAVAULT_TEST_PAUSE_AT=NAME:N` stops at the
//! `N`th time it passes [`pause`]`("NAME")`: it prints
//! `wavault: paused at NAME:N` on stderr and waits forever, so a test can
//! SIGKILL it at exactly that point of an operation (a record half
//! re-sealed, a restore between two bots, a sweep between two purges)
//! instead of hoping a random delay lands there. Release builds compile
//! [`pause`] to nothing and never read the variable.

/// The environment variable naming the pause point (`NAME:N`, `N` ≥ 1).
pub const ENV: &str = "WAVAULT_TEST_PAUSE_AT";

/// Stops here for good when the environment asks for this point and hit.
#[inline]
pub fn pause(name: &str) {
    #[cfg(debug_assertions)]
    imp::pause(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
mod imp {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    fn target() -> Option<&'static (String, u64)> {
        static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
        TARGET
            .get_or_init(|| {
                let v = std::env::var(super::ENV).ok()?;
                let (name, n) = v.rsplit_once(':')?;
                Some((name.to_string(), n.parse().ok().filter(|n| *n > 0)?))
            })
            .as_ref()
    }

    pub fn pause(name: &str) {
        static HITS: AtomicU64 = AtomicU64::new(0);
        let Some((want, n)) = target() else { return };
        if want != name || HITS.fetch_add(1, Ordering::SeqCst) + 1 != *n {
            return;
        }
        eprintln!("wavault: paused at {name}:{n}");
        loop {
            std::thread::park();
        }
    }
}

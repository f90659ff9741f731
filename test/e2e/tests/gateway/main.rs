//! Gateway specs: Alertmanager webhooks and Kubernetes Warning Events in, RemediationRequests
//! and audit events out, through an authenticated, rate limited, replay protected and
//! browser-hardened ingress. One module per group; `fixture` is what they share.

mod auth;
mod events;
mod fixture;
mod hardening;
mod ratelimit;
mod replay;
mod resilience;
mod webhook;

/// The specs spend their time waiting on the cluster, not on the CPU, so they run 8 at a time
/// rather than libtest's one per core. Set before `main`, when libtest reads it;
/// `RUST_TEST_THREADS` or `--test-threads` still decide when given.
#[used]
#[cfg_attr(target_os = "linux", unsafe(link_section = ".init_array"))]
#[cfg_attr(target_os = "macos", unsafe(link_section = "__DATA,__mod_init_func"))]
static SPECS_AT_A_TIME: extern "C" fn() = {
    extern "C" fn default_threads() {
        if std::env::var_os("RUST_TEST_THREADS").is_none() {
            // SAFETY: before `main` no other thread exists to read the environment.
            unsafe { std::env::set_var("RUST_TEST_THREADS", "8") };
        }
    }
    default_threads
};

//! CPU time, which leaves out the time a thread sat waiting for a core
//! that other processes held: on a shared machine it moves far less from
//! one run to the next than wall time does.
//!
//! Each bench uses the clocks it needs.
#![allow(dead_code)]

use std::time::Duration;

/// CPU time consumed by the calling thread so far (user and system).
pub fn thread_cpu_time() -> Duration {
    clock(Clock::Thread)
}

/// CPU time consumed by every thread of this process so far.
pub fn process_cpu_time() -> Duration {
    clock(Clock::Process)
}

enum Clock {
    Thread,
    Process,
}

#[cfg(unix)]
fn clock(which: Clock) -> Duration {
    let id = match which {
        Clock::Thread => libc::CLOCK_THREAD_CPUTIME_ID,
        Clock::Process => libc::CLOCK_PROCESS_CPUTIME_ID,
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "CPU-time clocks are supported");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Without CPU-time clocks, wall time since the first call.
#[cfg(not(unix))]
fn clock(_which: Clock) -> Duration {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

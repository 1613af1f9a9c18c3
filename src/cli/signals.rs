//! Stop signals of a training command: SIGINT (Ctrl-C), SIGTERM (docker stop, systemd, SLURM
//! pre-emption) and SIGHUP (a dropped terminal or ssh session). The first sets the flag
//! [`stop_flag`] the trainer watches: the run writes a resumable checkpoint and the command exits with
//! 128 + the signal's number (130, 143, 129), so a script tells an interrupted run from a finished
//! one. A second signal quits at once (the checkpoints on disk stay intact: writes are atomic).
//! A SIGHUP that was ignored when the process started (`nohup`) stays ignored.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, LazyLock};

/// Set by the first stop signal; handed to the trainer as its cancellation flag.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// The cancellation flag the stop signals set.
pub fn stop_flag() -> Arc<AtomicBool> {
    STOP.clone()
}

/// The first stop signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// A command that stopped on a signal after saving: `main` exits with 128 + `signal`.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: i32,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", name(self.signal))
    }
}

impl std::error::Error for Interrupted {}

impl Interrupted {
    /// The exit code of a command stopped by this signal.
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal).clamp(0, 255) as u8
    }
}

pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// The stop signal received so far, if any.
pub fn received() -> Option<Interrupted> {
    match RECEIVED.load(Ordering::Relaxed) {
        0 => None,
        signal => Some(Interrupted { signal }),
    }
}

/// Whether `signal` was ignored when this process started (Linux: /proc/self/status, SigIgn).
fn ignored_at_start(signal: i32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask >> (signal - 1) & 1 == 1)
}

/// Handle the stop signals from now on (a thread waits for them).
pub fn install() {
    let mut wanted = vec![SIGINT, SIGTERM];
    if !ignored_at_start(SIGHUP) {
        wanted.push(SIGHUP);
    }
    let Ok(mut signals) = signal_hook::iterator::Signals::new(&wanted) else {
        eprintln!(
            "warning: stop signals cannot be handled: an interrupted run loses the work since its last checkpoint"
        );
        return;
    };
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if RECEIVED.compare_exchange(0, signal, Ordering::Relaxed, Ordering::Relaxed).is_err() {
                // a second signal: leave now
                std::process::exit(128 + signal);
            }
            STOP.store(true, Ordering::Relaxed);
            eprintln!("\nstopping on {}: writing a resumable checkpoint (send it again to quit at once)", name(signal));
        }
    });
}

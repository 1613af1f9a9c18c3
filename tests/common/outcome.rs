//! What a run of the binary ended with, for the test crates that run it: success (its stdout), or
//! a refusal (exit 2, no panic, every expected piece of the message on stderr).
#![allow(dead_code)]

use std::process::Output;

/// The run succeeded: its stdout (both streams in the failure message otherwise).
pub fn ok(o: &Output) -> String {
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}\n{err}");
    out.into_owned()
}

/// The run was refused with exit code 2, without a panic, its stderr naming every one of `needles`.
pub fn fails(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

//! Checking the outcome of a run of the built `lifeboat` binary, with its output in the message.

use std::process::Output;

/// The exit status and both streams, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[track_caller]
pub fn assert_success(output: &Output) {
    assert!(output.status.success(), "expected success\n{}", describe(output));
}

/// Asserts exit status 1 (a failure with a message) and returns stderr.
#[track_caller]
pub fn assert_failure(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "expected exit status 1\n{}", describe(output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

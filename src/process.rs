//! Child processes that must not outlive the thread that starts them (sandbox workers, the
//! loop's trainer): the kernel sends them a signal when that thread ends (PR_SET_PDEATHSIG),
//! whether it returns, panics or its process is killed.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the kernel send `signal` to the child `command` starts when the starting thread ends.
pub fn end_with_starting_thread(command: &mut Command, signal: libc::c_int) {
    let signal = signal as libc::c_ulong;
    // SAFETY: prctl is async-signal-safe, so it may run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

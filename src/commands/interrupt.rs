//! Ctrl-C and `kill`: SIGINT or SIGTERM ends a long command cleanly instead of by the default
//! action. Everything a run, an eval or a training job commits is already atomic (temp file, then
//! rename), so stopping keeps all of it and loses at most the work not yet flushed; what the
//! default action would leave behind is the sandbox workers' scratch folders (on hosts without
//! mount namespaces) and a user who does not know that the same command resumes. On the first
//! signal a watcher thread ends the sandbox workers, removes their folders, prints how to resume
//! and exits with 128 + the signal (130 for SIGINT). A second signal exits at once.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.swap(signal, Ordering::SeqCst) != 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Installs the handlers for the rest of the process; `job` names what stops ("run", "eval",
/// "training").
pub fn stop_cleanly_on_signals(job: &'static str) {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic (and calls _exit), both async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    let resume = resume_command();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let signal = RECEIVED.load(Ordering::SeqCst);
                if signal == 0 {
                    continue;
                }
                crate::sandbox::end_all_workers();
                eprintln!(
                    "\n{job} stopped by {}: the work it committed is kept (what was in flight is \
                     redone). To resume, run the same command:\n  {resume}",
                    signal_name(signal)
                );
                std::process::exit(128 + signal);
            }
        })
        .expect("start the signal watcher thread");
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// This process's command line, quoted for a POSIX shell.
fn resume_command() -> String {
    std::env::args()
        .map(|arg| shell_quote(&arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn arguments_are_quoted_only_where_a_shell_needs_it() {
        assert_eq!(shell_quote("pipelines/ipc.toml"), "pipelines/ipc.toml");
        assert_eq!(shell_quote("--runs-dir=/tmp/x"), "--runs-dir=/tmp/x");
        assert_eq!(shell_quote("my runs"), "'my runs'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}

//! A child process (e.g. `lb` inside a namespace) that is terminated with SIGTERM, given a
//! bounded grace period, then SIGKILLed and reaped when dropped.

use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// A child process that is terminated (SIGTERM, ~3 s grace, SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
    /// Waits up to `dur` for the child to exit.
    pub fn wait_timeout(&mut self, dur: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + dur;
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }
    /// Terminates the child (SIGTERM, then SIGKILL after ~3 s) and reaps it.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.0.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        if let Some(status) = self.wait_timeout(Duration::from_secs(3)) {
            return Some(status);
        }
        let _ = self.0.kill();
        self.wait_timeout(Duration::from_secs(2))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

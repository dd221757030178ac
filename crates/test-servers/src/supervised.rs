//! A server process under a shell watchdog that outlives nothing.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// A server started by a small `sh` watchdog script whose stdin is a pipe
/// from the test process.
///
/// The script starts the server in the background, prints its PID, reads
/// stdin until end of input, then stops the server and removes its
/// directory. Dropping a `Supervised` (or calling [`Supervised::stop`])
/// closes the pipe; so does the test process ending in any way (a panic,
/// `exit`, even `SIGKILL`), because the kernel closes its file descriptors.
/// That is what makes a server kept in a `static` safe.
#[derive(Debug)]
pub struct Supervised {
    watchdog: Child,
    /// Closing this ends the watchdog, which stops the server.
    stdin: Option<ChildStdin>,
    pid: u32,
    dir: PathBuf,
}

impl Supervised {
    /// Runs `script` with `sh -c`, as `$0` `name`, `$1` `dir`, then `args`;
    /// the script must print the server's PID on its first line.
    pub fn spawn<I, S>(name: &str, script: &str, dir: &Path, args: I) -> Result<Supervised, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(name)
            .arg(dir)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not run sh: {e}"))?;
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .map_err(|e| format!("reading the server's pid: {e}"))?;
        let pid: u32 = line
            .trim()
            .parse()
            .map_err(|_| format!("the {name} watchdog printed {line:?} instead of a pid"))?;
        Ok(Supervised {
            stdin: watchdog.stdin.take(),
            watchdog,
            pid,
            dir: dir.to_owned(),
        })
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the server process still runs (and is not a zombie).
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }

    /// The file `name` in the server's directory (its log), empty if absent.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid.to_string())
            .status()
            .expect("could not run kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid);
    }

    /// Stops the server and waits until the watchdog has removed it and its
    /// directory.
    pub fn stop(mut self) {
        self.close();
    }

    fn close(&mut self) {
        // End of input: the watchdog stops the server, waits for it and
        // removes the directory; waiting for the watchdog waits for all that.
        if self.stdin.take().is_some() {
            let _ = self.watchdog.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.close();
    }
}

//! A demo binary as a child process, on a free port, with its log kept for
//! failure reports.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many of the demo's last log lines a failure report shows.
const LOG_LINES: usize = 40;

/// A running demo; killed on drop.
pub(crate) struct Demo {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    /// Starts `binary` on a free port of 127.0.0.1 with the SQLite file
    /// `database`, answering to `localhost` only, its public URL (the
    /// passkey relying party's origin) `http://localhost:PORT`. The port is
    /// chosen here, not with port 0, because the public URL must name it
    /// before the demo starts; a port taken in between is retried.
    pub(crate) fn start(binary: &str, database: &Path) -> Result<Self, String> {
        let mut errors = Vec::new();
        for _ in 0..3 {
            let port = free_port()?;
            match Self::start_on(binary, database, port) {
                Ok(demo) => return Ok(demo),
                Err(error) => errors.push(error),
            }
        }
        Err(format!(
            "the demo {binary} did not start:\n{}",
            errors.join("\n")
        ))
    }

    fn start_on(binary: &str, database: &Path, port: u16) -> Result<Self, String> {
        let mut command = Command::new(binary);
        // Nothing of the caller's demo settings leaks in (a REDIS_URL, an
        // SMTP server, a fixed key).
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("DEMO_")) {
                command.env_remove(&name);
            }
        }
        command
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "warn")
            .env("DEMO_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", format!("sqlite://{}", database.display()))
            .env("DEMO_ALLOWED_HOSTS", "localhost")
            .env("DEMO_PUBLIC_URL", format!("http://localhost:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {binary}: {e}"))?;
        let stderr = child.stderr.take().ok_or("stderr is piped")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        // Reads the log to its end (so the child never blocks on a full
        // pipe), keeping the last lines, and says when the demo listens.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on http://") {
                    let _ = ready_tx.send(());
                }
                let mut log = lines.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() == LOG_LINES {
                    log.remove(0);
                }
                log.push(line);
            }
        });
        let mut demo = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(demo);
            }
            if let Ok(Some(status)) = demo.child.try_wait() {
                // The log is complete once the reader saw its end.
                let _ = reader.join();
                return Err(format!(
                    "the demo exited ({status}) on port {port}:\n{}",
                    demo.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the demo printed no address within 30 s:\n{}",
                    demo.log_tail()
                ));
            }
        }
    }

    /// Where a browser opens it.
    pub(crate) fn base_url(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// The last lines of its log.
    pub(crate) fn log_tail(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

//! The demo binaries over real HTTP: each example's `tests/http.rs` calls
//! [`demo_serves_the_api_and_keeps_sessions_across_a_restart`] with its
//! binary, which is started on a free port (port 0) with a temporary SQLite
//! file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A demo binary running on a free port.
#[derive(Debug)]
pub struct Demo {
    child: Child,
    addr: String,
    /// Everything the binary printed (stdout and stderr), as it comes.
    output: std::sync::Arc<std::sync::Mutex<String>>,
    drains: Vec<std::thread::JoinHandle<()>>,
}

impl Demo {
    /// Starts `binary` on `127.0.0.1:0` with the SQLite file `database` and
    /// waits for the address it prints.
    pub fn start(binary: &str, database: &Path) -> Self {
        let database = format!("sqlite://{}", database.display());
        Self::start_with(
            binary,
            &[("DEMO_ADDR", "127.0.0.1:0"), ("DATABASE_URL", &database)],
        )
    }

    /// Starts `binary` with these environment variables (and no
    /// `REDIS_URL`) and waits for the `listening on http://...` line it
    /// prints on stderr.
    pub fn start_with(binary: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary);
        // Only what the test sets: no DEMO_* setting of the caller's (an
        // allow-list, a mailer) changes what the demo answers.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("DEMO_")) {
                command.env_remove(name);
            }
        }
        command
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the binary starts");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let keep = |line: &str| {
            let mut all = output
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            all.push_str(line);
            all.push('\n');
        };
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the demo prints its address")
                .expect("readable stderr");
            keep(&line);
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.trim_end_matches('/').to_owned();
            }
        };
        // Keep draining both pipes (kept for `stop`), so the child never
        // blocks on a full one.
        let stdout = child.stdout.take().expect("stdout is piped");
        let drain = |lines: Box<dyn Iterator<Item = std::io::Result<String>> + Send>| {
            let output = std::sync::Arc::clone(&output);
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let mut all = output
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    all.push_str(&line);
                    all.push('\n');
                }
            })
        };
        let drains = vec![
            drain(Box::new(lines)),
            drain(Box::new(BufReader::new(stdout).lines())),
        ];
        Self {
            child,
            addr,
            output,
            drains,
        }
    }

    /// Stops the binary and answers everything it printed (stdout and
    /// stderr).
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for drain in self.drains.drain(..) {
            let _ = drain.join();
        }
        let output = self
            .output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        output.clone()
    }

    /// One request; returns (status, headers, body). A chunked body is
    /// decoded.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Vec<(String, String)>, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("loopback I/O");
        let body = body.unwrap_or("");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        if let Some(cookie) = cookie {
            request.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).expect("loopback I/O");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("loopback I/O");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let headers: Vec<(String, String)> = headers;
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, headers, body)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        raw = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A new empty directory for one test's files, named by the process and
/// the time: never one a failed earlier run left behind.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The demo at `binary` serves the API over real HTTP, and its sessions
/// survive a restart on the same SQLite file.
pub fn demo_serves_the_api_and_keeps_sessions_across_a_restart(binary: &str) {
    let name = Path::new(binary)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("demo");
    let dir = fresh_dir(name);
    let database = dir.join("demo.db");
    let credentials = r#"{"username":"alice","password":"correct horse battery staple"}"#;

    let demo = Demo::start(binary, &database);
    let (status, _, body) = demo.request("POST", "/api/register", None, Some(credentials));
    assert_eq!(status, 201, "{body}");
    let (status, headers, body) = demo.request("POST", "/api/login", None, Some(credentials));
    assert_eq!(status, 200, "{body}");
    let cookie = headers
        .iter()
        .find(|(n, v)| n == "set-cookie" && v.starts_with("__Host-session="))
        .map(|(_, v)| v.split(';').next().expect("temp dir").to_owned())
        .expect("a session cookie");
    let (status, _, body) = demo.request("GET", "/api/me", Some(&cookie), None);
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"username":"alice","mfa_enabled":false}"#)
    );
    let (status, _, body) = demo.request("GET", "/", None, None);
    assert_eq!(status, 200);
    assert!(body.contains("<!doctype html>"));
    drop(demo);

    // Same database file, new process: the session is still there.
    let demo = Demo::start(binary, &database);
    let (status, _, _) = demo.request("GET", "/api/me", Some(&cookie), None);
    assert_eq!(status, 200, "the session survived the restart");
    let (status, _, _) = demo.request("POST", "/api/logout", Some(&cookie), None);
    assert_eq!(status, 204);
    let (status, _, _) = demo.request("GET", "/api/me", Some(&cookie), None);
    assert_eq!(status, 401);
    drop(demo);
    let _ = std::fs::remove_dir_all(dir);
}

/// A small example app at `binary` (one of `examples/minimal`), over real
/// HTTP on a free port with a fresh SQLite file: registration through the
/// app's own table, the login name's normal form, one answer for a wrong
/// password, the protected route handing the app's user type to the
/// handler, logout ending the session server-side, and the app's table
/// left with its own three columns.
pub fn minimal_app_registers_logs_in_and_out(binary: &str) {
    let name = Path::new(binary)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("app");
    let dir = fresh_dir(name);
    let database = format!("sqlite://{}?mode=rwc", dir.join("app.db").display());
    let app = Demo::start_with(
        binary,
        &[("APP_ADDR", "127.0.0.1:0"), ("DATABASE_URL", &database)],
    );
    let body =
        |email: &str, password: &str| format!(r#"{{"email":"{email}","password":"{password}"}}"#);
    let password = "correct horse battery staple";

    let (status, _, _) = app.request("GET", "/me", None, None);
    assert_eq!(status, 401, "the protected route needs a login");
    let alice = body("Alice@Example.com", password);
    let (status, _, text) = app.request("POST", "/register", None, Some(&alice));
    assert_eq!(status, 201, "{text}");
    let again = body("alice@example.com", password);
    let (status, _, _) = app.request("POST", "/register", None, Some(&again));
    assert_eq!(status, 409, "the normal form of the email is taken");
    let weak = body("bob@example.com", "password");
    let (status, _, text) = app.request("POST", "/register", None, Some(&weak));
    assert_eq!(status, 400, "the password policy applies: {text}");

    let wrong = body("alice@example.com", "not the password at all");
    let (status, headers, _) = app.request("POST", "/login", None, Some(&wrong));
    assert_eq!(status, 401);
    assert!(!headers.iter().any(|(n, _)| n == "set-cookie"));
    let typed = body("ALICE@example.com", password);
    let (status, headers, text) = app.request("POST", "/login", None, Some(&typed));
    assert_eq!(status, 204, "{text}");
    let cookie = headers
        .iter()
        .find(|(n, v)| n == "set-cookie" && v.starts_with("__Host-session="))
        .map(|(_, v)| v.split(';').next().unwrap_or_default().to_owned())
        .expect("a session cookie");
    let (status, _, text) = app.request("GET", "/me", Some(&cookie), None);
    assert_eq!(
        (status, text.as_str()),
        (200, "Hello, alice@example.com (user 1)"),
        "the handler got the app's own user"
    );
    let (status, _, _) = app.request("POST", "/logout", Some(&cookie), None);
    assert_eq!(status, 204);
    let (status, _, _) = app.request("GET", "/me", Some(&cookie), None);
    assert_eq!(status, 401, "logout ended the session server-side");

    // Malformed bodies are refused, and nothing the app prints holds
    // their password (Rocket logs a refused body guard's error).
    let marker = "Marker-Password-4711";
    for (path, malformed) in [
        (
            "/register",
            format!(r#"{{"email":"eve@example.com","password":"{marker}",}}"#),
        ),
        ("/login", format!(r#"{{"email":17,"password":"{marker}"}}"#)),
        ("/login", format!(r#"{{"password":"{marker}""#)),
    ] {
        let (status, _, text) = app.request("POST", path, None, Some(&malformed));
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(
            !text.contains(marker),
            "{path}: the answer holds the password"
        );
    }
    let printed = app.stop();
    assert!(
        !printed.contains(marker),
        "the app printed a password:\n{printed}"
    );
    // The app's table is as the app made it: the toolkit keeps its own
    // state (sessions, factors, epochs) in tables of its own.
    let db = rusqlite::Connection::open(dir.join("app.db")).expect("the app's database");
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('users') ORDER BY cid")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .expect("the users table's columns");
    assert_eq!(columns, ["id", "email", "password_hash"], "no column added");
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
}

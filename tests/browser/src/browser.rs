//! Headless Chromium over the DevTools protocol: finding and launching it,
//! a tab with a virtual WebAuthn authenticator, and bounded waits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::network::{Cookie, EventResponseReceived};
use chromiumoxide::cdp::browser_protocol::page::{
    RemoveScriptToEvaluateOnNewDocumentParams, ScriptIdentifier,
};
use chromiumoxide::cdp::browser_protocol::web_authn::{
    AddVirtualAuthenticatorParams, AuthenticatorId, AuthenticatorProtocol, AuthenticatorTransport,
    Credential, EnableParams, GetCredentialsParams, VirtualAuthenticatorOptions,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    EventConsoleApiCalled, EventExceptionThrown, RemoteObject,
};
use chromiumoxide::{Element, Page};
use futures_util::StreamExt;
use serde_json::Value;

/// How long one wait (an element, a navigation, a page change) may take.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);
/// How long one DevTools call may take.
const CALL: Duration = Duration::from_secs(5);

/// Chromium's executable: `CHROMIUM`, else `chromium` on `PATH`. `None`
/// (after printing `SKIPPED (service): ...`) when it is not installed;
/// under `CI=true` that is a failure instead.
pub(crate) fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CHROMIUM={} is not a file; unset it to use `chromium` from PATH",
            path.display()
        );
        return Some(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|candidate| is_executable(candidate))
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed, but CI=true requires the browser tests to run \
             (apt-get install chromium; .ci/run installs it)"
        );
        // Written to the real stderr, past the test harness's capture.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED (service): chromium is not installed (apt-get install chromium, or set CHROMIUM)"
        );
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A headless Chromium with its own profile directory.
pub(crate) struct Chromium {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
}

impl Chromium {
    /// Launches `executable` headless with the profile in `profile`, which
    /// must be new and empty.
    pub(crate) async fn launch(executable: &Path, profile: &Path) -> Result<Self, String> {
        let config = BrowserConfig::builder()
            .chrome_executable(executable)
            .user_data_dir(profile)
            // These flags, not chromiumoxide's puppeteer list; the builder
            // adds --headless (with --hide-scrollbars, --mute-audio),
            // --no-sandbox (with --disable-setuid-sandbox: CI runs as
            // root), --remote-debugging-port=0, --user-data-dir and
            // --disable-extensions.
            .disable_default_args()
            .no_sandbox()
            .args([
                "disable-gpu",
                "disable-background-networking",
                "disable-component-update",
                "disable-sync",
                "no-first-run",
            ])
            .launch_timeout(Duration::from_secs(20))
            .request_timeout(CALL)
            .build()
            .map_err(|e| format!("chromium configuration: {e}"))?;
        let (browser, mut handler) = Browser::launch(config)
            .await
            .map_err(|e| format!("chromium ({}) did not start: {e}", executable.display()))?;
        // The connection makes progress only while its handler is polled;
        // a message it cannot parse is not a reason to stop.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Ok(Self { browser, handler })
    }

    /// A new tab for pages of `base` (`http://localhost:PORT`), with a
    /// virtual authenticator that holds discoverable credentials and
    /// verifies its user without asking: a platform authenticator with a
    /// fingerprint reader that always matches.
    pub(crate) async fn tab(&self, base: &str) -> Result<Tab, String> {
        let page = call("open a tab", self.browser.new_page("about:blank")).await?;
        call("enable WebAuthn", page.execute(EnableParams::default())).await?;
        let options = VirtualAuthenticatorOptions::builder()
            .protocol(AuthenticatorProtocol::Ctap2)
            .transport(AuthenticatorTransport::Internal)
            .has_resident_key(true)
            .has_user_verification(true)
            .is_user_verified(true)
            .automatic_presence_simulation(true)
            .build()?;
        let authenticator = call(
            "add a virtual authenticator",
            page.execute(AddVirtualAuthenticatorParams::new(options)),
        )
        .await?
        .result
        .authenticator_id;
        let notes = Arc::new(Mutex::new(Vec::new()));
        watch_page(&page, &notes).await?;
        Ok(Tab {
            page,
            base: base.trim_end_matches('/').to_owned(),
            authenticator,
            notes,
            no_autofill: Mutex::new(None),
        })
    }

    /// Closes the browser and waits for its process.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(CALL, self.browser.close()).await;
        if tokio::time::timeout(CALL, self.browser.wait())
            .await
            .is_err()
        {
            let _ = self.browser.kill().await;
        }
        self.handler.abort();
    }
}

/// What the page said on its own that a failure report should show:
/// uncaught exceptions, console messages and HTTP errors.
async fn watch_page(page: &Page, notes: &Arc<Mutex<Vec<String>>>) -> Result<(), String> {
    let mut exceptions = call(
        "listen for exceptions",
        page.event_listener::<EventExceptionThrown>(),
    )
    .await?;
    let mut console = call(
        "listen to the console",
        page.event_listener::<EventConsoleApiCalled>(),
    )
    .await?;
    let mut responses = call(
        "listen for responses",
        page.event_listener::<EventResponseReceived>(),
    )
    .await?;
    let sink = Arc::clone(notes);
    tokio::spawn(async move {
        while let Some(event) = exceptions.next().await {
            let details = &event.exception_details;
            let what = details
                .exception
                .as_ref()
                .map_or_else(|| details.text.clone(), describe);
            note(&sink, format!("uncaught: {what}"));
        }
    });
    let sink = Arc::clone(notes);
    tokio::spawn(async move {
        while let Some(event) = console.next().await {
            let args: Vec<String> = event.args.iter().map(describe).collect();
            note(
                &sink,
                format!("console.{:?}: {}", event.r#type, args.join(" ")),
            );
        }
    });
    let sink = Arc::clone(notes);
    tokio::spawn(async move {
        while let Some(event) = responses.next().await {
            let response = &event.response;
            if response.status >= 400 && !response.url.ends_with("/favicon.ico") {
                note(&sink, format!("HTTP {} {}", response.status, response.url));
            }
        }
    });
    Ok(())
}

fn describe(object: &RemoteObject) -> String {
    match (&object.value, &object.description) {
        (Some(Value::String(s)), _) => s.clone(),
        (Some(value), _) => value.to_string(),
        (None, Some(description)) => description.clone(),
        (None, None) => format!("{:?}", object.r#type),
    }
}

fn note(notes: &Mutex<Vec<String>>, line: String) {
    notes.lock().unwrap_or_else(|e| e.into_inner()).push(line);
}

/// One DevTools call, bounded by [`CALL`], its error with `what` it was.
async fn call<T, E: std::fmt::Display>(
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(_) => Err(format!("{what}: no answer within {CALL:?}")),
    }
}

/// A JavaScript string literal of `text`.
pub(crate) fn js_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// A tab on the demo.
pub(crate) struct Tab {
    page: Page,
    base: String,
    authenticator: AuthenticatorId,
    notes: Arc<Mutex<Vec<String>>>,
    /// The script that turns passkey autofill off, while it is off.
    no_autofill: Mutex<Option<ScriptIdentifier>>,
}

impl Tab {
    /// Turns the browser's passkey autofill (conditional mediation) on or
    /// off for the documents opened from now on.
    ///
    /// With the WebAuthn UI off, Chromium hands a conditional request to the
    /// virtual authenticator at once, which answers it: a page with passkey
    /// autofill signs in as soon as it loads, as if the person had picked
    /// the passkey from the user-name field's suggestions. That is the
    /// autofill test; to type a password or press a passkey button instead,
    /// the walk makes this a browser without autofill
    /// (`PublicKeyCredential.isConditionalMediationAvailable()` answers
    /// false, which the demo's script handles by not offering it).
    pub(crate) async fn passkey_autofill(&self, on: bool) -> Result<(), String> {
        let installed = self
            .no_autofill
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match (on, installed) {
            (true, Some(script)) => {
                call(
                    "turn passkey autofill on",
                    self.page
                        .execute(RemoveScriptToEvaluateOnNewDocumentParams::new(script)),
                )
                .await?;
            }
            (false, None) => {
                let script = call(
                    "turn passkey autofill off",
                    self.page.evaluate_on_new_document(
                        "if (window.PublicKeyCredential) { \
                         PublicKeyCredential.isConditionalMediationAvailable = \
                         () => Promise.resolve(false); }",
                    ),
                )
                .await?;
                *self.no_autofill.lock().unwrap_or_else(|e| e.into_inner()) = Some(script);
            }
            (_, installed) => {
                *self.no_autofill.lock().unwrap_or_else(|e| e.into_inner()) = installed;
            }
        }
        Ok(())
    }

    /// Opens `path` of the demo and waits for the page to be loaded.
    pub(crate) async fn open(&self, path: &str) -> Result<(), String> {
        let url = format!("{}{path}", self.base);
        call(&format!("open {url}"), self.page.goto(url.as_str())).await?;
        self.wait_for(
            &format!("{path} loaded"),
            "document.readyState === 'complete'",
        )
        .await
        .map(drop)
    }

    /// Evaluates `expression` until its value is truthy (an exception counts
    /// as not yet: the page may be navigating), for up to [`WAIT`]; returns
    /// the value.
    pub(crate) async fn wait_for(&self, what: &str, expression: &str) -> Result<Value, String> {
        let guarded = format!(
            "(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        );
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Ok(result)) =
                tokio::time::timeout(CALL, self.page.evaluate(guarded.as_str())).await
            {
                let value = result.value().cloned().unwrap_or(Value::Null);
                let truthy = match &value {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::String(s) => !s.is_empty(),
                    Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                    Value::Array(_) | Value::Object(_) => true,
                };
                if truthy {
                    return Ok(value);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("timed out after {WAIT:?} waiting for {what}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The element `selector` names, once it is there.
    pub(crate) async fn element(&self, selector: &str) -> Result<Element, String> {
        self.wait_for(
            &format!("the element {selector}"),
            &format!("document.querySelector({}) !== null", js_string(selector)),
        )
        .await?;
        call(
            &format!("find {selector}"),
            self.page.find_element(selector),
        )
        .await
    }

    /// The element `selector` names, once it is shown and enabled (the
    /// passkey script unhides its forms and buttons, and disables a button
    /// while its ceremony runs).
    pub(crate) async fn shown(&self, selector: &str) -> Result<Element, String> {
        self.wait_for(
            &format!("{selector} to be shown"),
            &format!(
                "(e => !!e && !e.disabled && e.getClientRects().length > 0)\
                 (document.querySelector({}))",
                js_string(selector)
            ),
        )
        .await?;
        self.element(selector).await
    }

    /// Whether `selector` names an element now.
    pub(crate) async fn exists(&self, selector: &str) -> Result<bool, String> {
        let found = call(
            &format!("look for {selector}"),
            self.page.evaluate(format!(
                "document.querySelector({}) !== null",
                js_string(selector)
            )),
        )
        .await?;
        Ok(found.value() == Some(&Value::Bool(true)))
    }

    /// Types `text` into the field `selector` (focus, then key events).
    pub(crate) async fn fill(&self, selector: &str, text: &str) -> Result<(), String> {
        let field = self.shown(selector).await?;
        call(&format!("focus {selector}"), field.focus()).await?;
        call(&format!("type into {selector}"), field.type_str(text)).await?;
        // Key events are asynchronous to the page: see the value arrive.
        self.wait_for(
            &format!("the text typed into {selector}"),
            &format!(
                "document.querySelector({}).value === {}",
                js_string(selector),
                js_string(text)
            ),
        )
        .await
        .map(drop)
    }

    /// Clicks `selector` (mouse events at its centre).
    pub(crate) async fn click(&self, selector: &str) -> Result<(), String> {
        let target = self.shown(selector).await?;
        call(&format!("click {selector}"), target.click())
            .await
            .map(drop)
    }

    /// Clicks `selector` and waits until a new document at `path` has
    /// loaded (a form post, or a script navigating). The old document is
    /// marked first, so a page that answers with its own path again is not
    /// mistaken for the next one.
    pub(crate) async fn click_to(&self, selector: &str, path: &str) -> Result<(), String> {
        self.mark_document().await?;
        self.click(selector).await?;
        self.wait_navigated(path).await
    }

    /// Marks the current document (see [`wait_navigated`](Self::wait_navigated)).
    pub(crate) async fn mark_document(&self) -> Result<(), String> {
        call(
            "mark the document",
            self.page.evaluate("window.__browserWalkOld = true"),
        )
        .await
        .map(drop)
    }

    /// Waits until a document other than the marked one has loaded at
    /// `path`.
    pub(crate) async fn wait_navigated(&self, path: &str) -> Result<(), String> {
        self.wait_for(
            &format!("a new page at {path}"),
            &format!(
                "!window.__browserWalkOld && location.pathname === {} \
                 && document.readyState === 'complete'",
                js_string(path)
            ),
        )
        .await
        .map(drop)
    }

    /// Waits until the page's text contains `text`.
    pub(crate) async fn wait_text(&self, text: &str) -> Result<(), String> {
        self.wait_for(
            &format!("the text {text:?}"),
            &format!("document.body.innerText.includes({})", js_string(text)),
        )
        .await
        .map(drop)
    }

    /// The browser's cookies for the page.
    pub(crate) async fn cookies(&self) -> Result<Vec<Cookie>, String> {
        call("read the cookies", self.page.get_cookies()).await
    }

    /// The credentials the virtual authenticator holds.
    pub(crate) async fn credentials(&self) -> Result<Vec<Credential>, String> {
        Ok(call(
            "list the authenticator's credentials",
            self.page
                .execute(GetCredentialsParams::new(self.authenticator.clone())),
        )
        .await?
        .result
        .credentials)
    }

    /// The page as a failure report shows it: its address, its text, and
    /// what it reported on its own.
    pub(crate) async fn snapshot(&self) -> String {
        let state = tokio::time::timeout(
            CALL,
            self.page.evaluate(
                "JSON.stringify([location.href, document.body ? document.body.innerText : ''])",
            ),
        )
        .await;
        let (url, text) = match state {
            Ok(Ok(result)) => result
                .into_value::<String>()
                .ok()
                .and_then(|json| serde_json::from_str::<(String, String)>(&json).ok())
                .unwrap_or_default(),
            Ok(Err(error)) => (format!("(unreadable: {error})"), String::new()),
            Err(_) => ("(the page does not answer)".to_owned(), String::new()),
        };
        let text: String = text.chars().take(4000).collect();
        let notes = self
            .notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n");
        format!(
            "page: {url}\n--- page text ---\n{text}\n--- console, exceptions, HTTP errors ---\n{notes}"
        )
    }
}

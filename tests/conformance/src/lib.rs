//! The cross-framework conformance suite: HTTP cases written once, run
//! against every adapter's demo app (the JSON API of `docs/demo-api.md`) through
//! that framework's in-process client.
//!
//! An adapter implements [`Harness`] (send a request, get status, headers,
//! body) and [`HarnessFactory`] (build its demo around a given
//! [`auth_core::web::Auth`]), then invokes [`conformance_suite!`], which
//! expands every case into its own `#[tokio::test]`, so a failure names the
//! case. The suite builds the `Auth` itself: in-memory stores, a
//! [`ManualClock`] it advances for timeouts, cheap Argon2 parameters.
//!
//! # Example
//!
//! A case reads the mail the demo sent to the suite's SMTP sink and follows
//! its link:
//!
//! ```
//! let body = "Reset it here: http://demo.test/reset-password?token=Zm9v_YmFy-1\n";
//! assert_eq!(auth_conformance::link_token(body).as_deref(), Some("Zm9v_YmFy-1"));
//! assert_eq!(
//!     auth_conformance::link_path(body).as_deref(),
//!     Some("/reset-password?token=Zm9v_YmFy-1")
//! );
//! assert_eq!(auth_conformance::link_token("no link"), None);
//! ```

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use auth_core::clock::{Clock, ManualClock};
use auth_core::mfa::{TotpParams, TotpSecret};
use auth_core::password::PasswordHasher;
use auth_core::rate_limit::{ThrottleConfig, TrustedProxies};
use auth_core::web::Auth;

/// One request.
#[derive(Debug, Clone)]
pub struct TestRequest {
    /// HTTP method.
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// Headers (a `Host` is added when absent); values are bytes, which
    /// need not be UTF-8.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// The socket peer address.
    pub peer: IpAddr,
}

/// One response.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status code.
    pub status: u16,
    /// Headers, in order (repeated names repeated).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl TestResponse {
    /// All values of a header (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The visitor cookie (form tokens of visitors without a session) set
    /// by this response: (`name=value`, full `Set-Cookie` value).
    pub fn visitor_cookie(&self) -> Option<(String, String)> {
        self.header_all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("__Host-session-csrf="))
            .map(|c| {
                (
                    c.split(';').next().unwrap_or_default().to_owned(),
                    c.to_owned(),
                )
            })
    }

    /// The device cookie (a browser that logged in before) set by this
    /// response: (`name=value`, full `Set-Cookie` value).
    pub fn device_cookie(&self) -> Option<(String, String)> {
        self.header_all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("__Host-session-device="))
            .map(|c| {
                (
                    c.split(';').next().unwrap_or_default().to_owned(),
                    c.to_owned(),
                )
            })
    }

    /// The session cookie set by this response: (`name=value`, full
    /// `Set-Cookie` value).
    pub fn session_cookie(&self) -> Option<(String, String)> {
        self.header_all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("__Host-session="))
            .map(|c| {
                (
                    c.split(';').next().unwrap_or_default().to_owned(),
                    c.to_owned(),
                )
            })
    }
}

/// A framework's in-process client around its demo app.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Sends one request through the whole app (layers included).
    async fn send(&self, request: TestRequest) -> TestResponse;
}

/// Builds a framework's demo app around an [`Auth`].
pub trait HarnessFactory {
    /// Whether the framework hands header values that are not UTF-8 on to
    /// the app (axum, actix-web). Rocket 0.5 drops them before any code of
    /// ours runs, so a forwarding header of such bytes counts as absent
    /// there (documented in `auth-rocket`); the suite checks each case.
    const KEEPS_NON_UTF8_HEADERS: bool = true;

    /// The demo app for `auth`, behind its in-process client.
    fn build(auth: Auth) -> Box<dyn Harness>;
}

/// The app under test and its clock.
#[allow(missing_debug_implementations)]
pub struct TestApp {
    harness: Box<dyn Harness>,
    /// The injected clock; advance it for timeouts.
    pub clock: ManualClock,
    /// The pipeline the app runs (to reach the core, e.g. to rotate keys).
    pub auth: Auth,
}

/// Options for [`TestApp::start`].
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Throttle settings.
    pub throttle: ThrottleConfig,
    /// Trusted proxies.
    pub trusted_proxies: TrustedProxies,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            throttle: example_shared::throttle_config(),
            trusted_proxies: TrustedProxies::none(),
        }
    }
}

/// The SMTP server every app of this test process mails to: a real
/// server on 127.0.0.1 (`auth-smtp-sink`), shared, so cases use addresses
/// of their own.
pub fn sink() -> &'static auth_smtp_sink::SmtpSink {
    static SINK: OnceLock<auth_smtp_sink::SmtpSink> = OnceLock::new();
    SINK.get_or_init(|| {
        auth_smtp_sink::SmtpSink::start().unwrap_or_else(|e| panic!("SMTP sink: {e}"))
    })
}

/// A fresh address for a case (the sink is shared by every case).
pub fn fresh_address(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{name}.{}.{n}@mail.test", std::process::id())
}

/// The next mail to `address` (waiting up to 10 s), or `None`.
pub async fn mail_to(address: &str) -> Option<auth_smtp_sink::ReceivedMail> {
    sink()
        .wait_for_mail_where(address, Duration::from_secs(10), |m| !is_notice(m))
        .await
}

/// Whether a mail to `address` (security notices aside) arrives within
/// `wait`.
pub async fn no_mail_to(address: &str, wait: Duration) -> bool {
    sink()
        .wait_for_mail_where(address, wait, |m| !is_notice(m))
        .await
        .is_none()
}

/// The next security notice to `address` whose subject mentions `about`
/// (the core tells a verified address of every change to how its account
/// signs in; several may be under way at once), waiting up to 10 s.
/// [`mail_to`] leaves notices aside.
pub async fn notice_to(address: &str, about: &str) -> Option<auth_smtp_sink::ReceivedMail> {
    sink()
        .wait_for_mail_where(address, Duration::from_secs(10), |m| {
            is_notice(m) && m.subject.contains(about)
        })
        .await
}

fn is_notice(mail: &auth_smtp_sink::ReceivedMail) -> bool {
    mail.subject.starts_with("Security notice")
}

/// The CSRF token of the first form on the page `html`.
pub fn form_token_of(html: &str) -> String {
    html.split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form carries a CSRF token")
        .to_owned()
}

/// The token of the first link in `body` (`...?token=XYZ`).
pub fn link_token(body: &str) -> Option<String> {
    let start = body.find("?token=")? + "?token=".len();
    let token: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!token.is_empty()).then_some(token)
}

/// The path of the first link in `body`, after `http://demo.test`.
pub fn link_path(body: &str) -> Option<String> {
    let start = body.find("http://demo.test")? + "http://demo.test".len();
    Some(body[start..].split_whitespace().next()?.to_owned())
}

/// The default client address of test requests.
pub const CLIENT: &str = "198.51.100.7";
/// A strong password that passes the policy.
pub const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    /// A fresh app with in-memory stores.
    pub fn start<F: HarnessFactory>(options: TestOptions) -> Self {
        let clock = ManualClock::starting_now();
        let hasher =
            PasswordHasher::insecure_for_tests().unwrap_or_else(|e| panic!("test hasher: {e}"));
        let mailer = auth_core::mail::SmtpMailer::from_url(&sink().url(), "Demo <demo@demo.test>")
            .unwrap_or_else(|e| panic!("the sink's URL: {e}"));
        let auth = example_shared::build_auth_in_memory(
            Arc::new(clock.clone()),
            options.throttle,
            hasher,
            options.trusted_proxies,
            Arc::new(mailer),
        );
        Self {
            harness: F::build(auth.clone()),
            clock,
            auth,
        }
    }

    /// Sends a request.
    pub async fn send(&self, mut request: TestRequest) -> TestResponse {
        if !request
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            request.headers.push(("host".into(), b"demo.test".to_vec()));
        }
        self.harness.send(request).await
    }

    /// A request builder.
    pub fn req(method: &'static str, path: &str) -> TestRequest {
        TestRequest {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            peer: CLIENT.parse().unwrap_or(IpAddr::from([127, 0, 0, 1])),
        }
    }

    /// `POST path` with a JSON body and optional cookie.
    pub async fn post_json(
        &self,
        path: &str,
        body: serde_json::Value,
        cookie: Option<&str>,
    ) -> TestResponse {
        let mut request = Self::req("POST", path).json(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        self.send(request).await
    }

    /// `GET path` with an optional cookie.
    pub async fn get(&self, path: &str, cookie: Option<&str>) -> TestResponse {
        let mut request = Self::req("GET", path);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        self.send(request).await
    }

    /// Registers `name` with [`PASSWORD`].
    pub async fn register(&self, name: &str) {
        let response = self
            .post_json(
                "/api/register",
                serde_json::json!({"username": name, "password": PASSWORD}),
                None,
            )
            .await;
        assert_eq!(response.status, 201, "register {name}: {}", response.text());
    }

    /// Logs `name` in with `password`; returns the response.
    pub async fn login_with(
        &self,
        name: &str,
        password: &str,
        cookie: Option<&str>,
    ) -> TestResponse {
        self.post_json(
            "/api/login",
            serde_json::json!({"username": name, "password": password}),
            cookie,
        )
        .await
    }

    /// Logs `name` in and returns the `name=value` session cookie.
    pub async fn login(&self, name: &str) -> String {
        let response = self.login_with(name, PASSWORD, None).await;
        assert_eq!(response.status, 200, "login {name}: {}", response.text());
        response
            .session_cookie()
            .unwrap_or_else(|| panic!("no session cookie"))
            .0
    }

    /// Loads a form page as a visitor without a session and returns its
    /// visitor cookie (`name=value`, what binds the token) and CSRF token.
    pub async fn form_token(&self, path: &str) -> (String, String) {
        let page = self.get(path, None).await;
        assert_eq!(page.status, 200, "GET {path}");
        assert!(
            page.session_cookie().is_none(),
            "a form page stores no session"
        );
        let cookie = page
            .visitor_cookie()
            .expect("the form page sets a visitor cookie")
            .0;
        (cookie, form_token_of(&page.text()))
    }

    /// Posts a form body.
    pub async fn post_form(&self, path: &str, body: &str, cookie: Option<&str>) -> TestResponse {
        let mut request = Self::req("POST", path)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "text/html")
            .body(body.to_owned());
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        self.send(request).await
    }

    /// The TOTP code of `secret` (base32) at the injected clock's time.
    pub fn totp(&self, secret: &str) -> String {
        self.totp_at(secret, 0)
    }

    /// The TOTP code of `secret` (base32) `steps` steps away from the
    /// injected clock's time.
    pub fn totp_at(&self, secret: &str, steps: i64) -> String {
        let params = TotpParams::default();
        let secret = TotpSecret::from_base32(secret).expect("a base32 TOTP secret");
        let step = i64::try_from(params.step_secs()).unwrap_or(30);
        let at = self.clock.now().as_unix_secs() + steps * step;
        let at = u64::try_from(at).expect("a time after 1970");
        params
            .code_at(&secret, at)
            .expect("a TOTP code")
            .as_str()
            .to_owned()
    }

    /// Advances the injected clock.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

impl TestRequest {
    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }

    /// Adds a header whose value is raw bytes (possibly not UTF-8).
    #[must_use]
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.push((name.to_owned(), value.to_vec()));
        self
    }

    /// Sets a JSON body.
    #[must_use]
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = body.to_string().into_bytes();
        self.header("content-type", "application/json")
    }

    /// Sets a raw body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the socket peer.
    #[must_use]
    pub fn peer(mut self, peer: &str) -> Self {
        self.peer = peer.parse().unwrap_or(self.peer);
        self
    }
}

pub mod cases;
pub mod http;
pub mod mfa_cases;
pub mod openapi_cases;
pub mod passkey_cases;
pub mod soft_authenticator;
pub mod token_cases;

/// Expands every case into a `#[tokio::test]` for the harness factory `$f`.
#[macro_export]
macro_rules! conformance_suite {
    ($f:ty) => {
        $crate::conformance_suite!(@cases $f;
            register_returns_201_with_the_name,
            oversized_bodies_are_refused_with_413,
            json_bodies_need_a_json_content_type,
            register_refuses_policy_violations_with_the_rule,
            register_refuses_a_taken_name_case_insensitively,
            login_sets_a_host_prefixed_hardened_cookie,
            the_session_cookie_is_a_browser_session_cookie,
            remember_me_makes_a_persistent_session,
            the_session_id_never_appears_in_a_body,
            me_needs_a_session,
            an_unprefixed_cookie_is_ignored,
            a_unicode_space_before_the_name_is_not_the_session_cookie,
            a_dead_duplicate_does_not_shadow_the_live_session,
            responses_carry_the_security_headers,
            form_pages_store_no_session,
            garbage_cookies_get_401_never_5xx,
            logout_clears_the_cookie_and_replay_fails,
            a_planted_session_id_dies_at_login,
            a_previous_session_id_dies_at_a_new_login,
            unknown_and_wrong_user_look_the_same,
            the_account_is_throttled_with_retry_after,
            the_correct_password_is_refused_while_locked,
            a_known_browser_passes_an_account_lock,
            unknown_hosts_are_refused,
            a_password_reset_by_mail_ends_sessions_and_lifts_the_lock,
            forgot_password_answers_alike_and_mails_only_verified_addresses,
            a_reset_link_is_bound_to_the_password_it_was_sent_for,
            verification_links_work_once,
            the_reset_pages_work_without_script,
            a_magic_link_signs_in_once,
            a_magic_link_never_replaces_another_accounts_session,
            a_change_of_address_takes_effect_once_verified,
            a_pending_change_of_address_dies_with_a_password_change,
            one_ip_is_throttled_across_accounts,
            spoofed_forwarded_headers_are_ignored,
            forwarded_headers_from_a_trusted_proxy_are_honoured,
            cross_site_login_is_refused,
            a_foreign_origin_is_refused,
            same_site_requests_are_refused,
            requests_without_fetch_headers_pass,
            same_origin_requests_pass,
            password_change_ends_other_sessions,
            password_change_rotates_the_current_session,
            password_change_needs_the_current_password,
            password_change_applies_the_policy,
            sessions_are_listed_with_handles_not_tokens,
            one_session_can_be_revoked,
            another_users_session_cannot_be_revoked,
            revoke_others_keeps_only_this_session,
            the_idle_timeout_ends_a_session,
            the_absolute_timeout_ends_a_session,
            malformed_json_gets_a_4xx,
            wrong_types_get_a_4xx,
            an_oversized_body_gets_a_4xx,
            get_never_changes_state,
            html_routes_redirect_to_login_with_a_safe_next,
            the_current_user_extractor_refuses_as_the_login_guard,
            the_next_parameter_is_never_an_open_redirect,
            api_routes_answer_json_401,
            html_forms_need_the_csrf_token,
            a_failed_login_keeps_the_current_session,
            personal_responses_are_not_cached,
            revoking_the_current_session_clears_the_cookie,
            non_utf8_forwarding_headers_do_not_merge_clients,
            unknown_routes_answer_404,
        );
        $crate::conformance_suite!(@mfa $f;
            changes_to_how_an_account_signs_in_are_told_to_its_address,
            totp_enrolment_is_active_only_after_confirmation,
            totp_enrolment_needs_the_password_not_a_recent_login,
            the_password_alone_opens_nothing_with_mfa,
            a_totp_code_works_once,
            remember_me_carries_through_the_second_factor,
            only_neighbouring_steps_are_accepted,
            recovery_codes_work_once,
            the_second_step_is_throttled,
            a_pending_login_expires,
            the_second_step_needs_a_pending_login,
            disabling_totp_needs_the_password_and_a_code,
            the_second_step_answers_carry_no_secret,
            the_login_form_leads_to_the_second_factor_page,
            the_second_factor_form_takes_a_recovery_code_once,
            the_second_factor_page_needs_a_pending_login,
            new_recovery_codes_need_a_second_factor_session,
            a_password_reset_keeps_the_second_factor,
            a_magic_link_still_asks_for_the_second_factor,
            new_recovery_codes_need_the_password_and_a_code,
            a_wrong_password_for_a_factor_change_is_throttled_like_a_login,
            a_wrong_code_for_a_factor_change_is_throttled,
            each_factor_change_ends_the_other_sessions,
            the_account_page_takes_the_proof_with_each_factor_change,
            the_account_page_changes_the_address_with_proof,
        );
        $crate::conformance_suite!(@openapi $f;
            the_openapi_document_is_identical_in_every_framework,
            the_openapi_document_describes_every_api_route,
        );
        $crate::conformance_suite!(@tokens $f;
            a_token_sign_in_answers_tokens_every_route_takes,
            a_token_sign_in_refuses_and_throttles_like_the_login,
            a_token_sign_in_with_a_second_factor_needs_the_code,
            a_password_only_token_is_not_multi_factor,
            a_reused_refresh_token_revokes_its_family,
            revocation_and_logout_end_the_family,
            account_changes_revoke_token_families,
            a_bearer_request_is_decided_by_its_token_alone,
            forged_tampered_and_expired_tokens_are_refused,
            every_bearer_401_carries_a_challenge,
            the_jwks_publishes_public_keys_through_a_rotation,
            an_idle_family_expires,
        );
        $crate::conformance_suite!(@passkeys $f;
            adding_and_removing_a_passkey_are_told_to_the_address,
            a_registered_passkey_is_listed,
            a_passkey_signs_in_without_a_password,
            a_passkey_completes_a_password_login,
            a_passkey_only_account_renews_its_recovery_codes,
            a_passkey_only_account_steps_up_with_a_recovery_code,
            a_replayed_passkey_assertion_is_refused,
            a_passkey_answer_from_another_origin_is_refused,
            a_passkey_ceremony_is_answered_once,
            an_expired_passkey_ceremony_is_refused,
            a_passkey_counter_that_goes_backwards_is_refused,
            a_removed_passkey_no_longer_signs_in,
            another_users_passkey_does_not_complete_a_login,
            no_passkey_second_step_without_the_password,
        );
    };
    (@cases $f:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::cases::$case::<$f>().await;
            }
        )*
    };
    (@mfa $f:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::mfa_cases::$case::<$f>().await;
            }
        )*
    };
    (@tokens $f:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::token_cases::$case::<$f>().await;
            }
        )*
    };
    (@passkeys $f:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::passkey_cases::$case::<$f>().await;
            }
        )*
    };
    (@openapi $f:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::openapi_cases::$case::<$f>().await;
            }
        )*
    };
}

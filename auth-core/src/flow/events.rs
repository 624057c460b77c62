//! Audit events of the flows: every success and failure goes through
//! `tracing` (target `auth_core::audit`) and the configured hook.

use std::net::IpAddr;

use super::{Authenticator, Client};
use crate::event::{AuthEvent, AuthEventKind, FailureReason};
use crate::session::Factor;

impl Authenticator {
    fn emit(&self, event: AuthEvent) {
        crate::event::trace(&event);
        if let Some(hook) = &self.inner.hook {
            hook.on_event(&event);
        }
    }

    /// Emits a success event.
    pub(super) fn success(
        &self,
        kind: AuthEventKind,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
        factor: Option<Factor>,
    ) {
        if let (Some(user_id), Some(ip)) = (user_id, ip)
            && let Some(change) = super::recovery::notice(kind)
        {
            self.notify(user_id, ip, change);
        }
        self.emit(AuthEvent {
            kind,
            success: true,
            user_id: user_id.map(str::to_owned),
            ip,
            factor,
            reason: None,
            at: self.now(),
        });
    }

    /// Emits a failure event with its (internal) reason.
    pub(super) fn failure(
        &self,
        kind: AuthEventKind,
        user_id: Option<&str>,
        client: &Client,
        factor: Option<Factor>,
        reason: FailureReason,
    ) {
        self.emit(AuthEvent {
            kind,
            success: false,
            user_id: user_id.map(str::to_owned),
            ip: Some(client.ip),
            factor,
            reason: Some(reason),
            at: self.now(),
        });
    }
}

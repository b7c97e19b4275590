//! Shared request-handling state and the steps every signing endpoint takes
//! around the pipeline: authenticate (native HMAC or CFSSL token), check the
//! key's scope, rate-limit, run the pipeline, log the decision.

use super::keys::{AuthKey, AuthKeys};
use super::ratelimit::RateLimiter;
use super::respond::ApiError;
use crate::issue::{Authority, IssueError, IssueRequest, Issued};
use crate::log::IssuanceLog;
use crate::metrics::metrics;
use ca_proto::auth::{parse_authorization, verify};
use ca_proto::logentry::{LogDecision, LogEntry, LogReason};
use ca_proto::replay::ReplayCache;
use ca_proto::sth::LogEvidence;
use ca_proto::{ErrorCode, ReasonBody};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct App {
    pub authority: Arc<Authority>,
    pub keys: AuthKeys,
    /// None only with `--no-log` (benchmarks).
    pub log: Option<IssuanceLog>,
    pub replay: Mutex<ReplayCache>,
    pub limiter: RateLimiter,
    pub max_body_bytes: usize,
    pub max_skew_secs: i64,
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl App {
    pub fn new(
        authority: Arc<Authority>,
        keys: AuthKeys,
        log: Option<IssuanceLog>,
        max_body_bytes: usize,
        max_skew_secs: i64,
        replay_cache_entries: usize,
    ) -> App {
        App {
            authority,
            keys,
            log,
            replay: Mutex::new(ReplayCache::new(replay_cache_entries, max_skew_secs)),
            limiter: RateLimiter::default(),
            max_body_bytes,
            max_skew_secs,
        }
    }

    /// Verify a native `Authorization` header over this exact request, then
    /// remember its nonce. Every failure is logged (without the header).
    pub fn authenticate_native(
        &self,
        header: Option<&str>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<&AuthKey, ApiError> {
        let now = now_unix();
        let result = (|| {
            let header = header.ok_or(ca_proto::auth::AuthError::Missing)?;
            let parsed = parse_authorization(header)?;
            let key = self
                .keys
                .get(&parsed.key_id)
                .ok_or(ca_proto::auth::AuthError::UnknownKey)?;
            verify(
                &parsed,
                &key.secrets(),
                method,
                path_and_query,
                body,
                now,
                self.max_skew_secs,
            )?;
            Ok::<_, ca_proto::auth::AuthError>((key, parsed))
        })();
        let (key, parsed) = result.map_err(|e| {
            tracing::warn!(
                event = "auth_denied",
                code = e.code().as_str(),
                path = path_and_query,
                "{}",
                e.public_message()
            );
            ApiError::new(e.code(), e.public_message())
        })?;
        let replay = self
            .replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_and_insert(&parsed.key_id, &parsed.nonce, parsed.ts, now);
        replay.map_err(|e| {
            tracing::warn!(event = "auth_denied", code = e.code().as_str(), key_id = %key.id, "replay check failed");
            ApiError::new(e.code(), "request nonce was already used or cannot be checked")
        })?;
        Ok(key)
    }

    /// A class the server knows, and the profile a request means (the class
    /// default when none is named).
    pub fn resolve_profile(&self, class: &str, profile: Option<&str>) -> Result<String, ApiError> {
        let policy = self.authority.policies().get(class).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownClass,
                format!("unknown class '{}'", printable(class)),
            )
        })?;
        Ok(match profile {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => policy.default_profile().to_string(),
        })
    }

    /// The key may act on this class and profile, and has tokens left.
    pub fn authorize(&self, key: &AuthKey, class: &str, profile: &str) -> Result<(), ApiError> {
        if !key.may_use_class(class) || !key.may_use_profile(profile) {
            tracing::warn!(
                event = "scope_denied",
                code = "forbidden_scope",
                key_id = %key.id,
                class = printable(class),
                profile = printable(profile),
                "key may not request this class/profile"
            );
            metrics()
                .denied
                .with_label_values(&[class_label(self, class), "forbidden_scope"])
                .inc();
            return Err(ApiError::new(
                ErrorCode::ForbiddenScope,
                format!(
                    "key '{}' may not request class '{}' profile '{}'",
                    key.id,
                    printable(class),
                    printable(profile)
                ),
            ));
        }
        if !self.limiter.allow(&key.id, key.rate_per_second, key.burst) {
            tracing::warn!(event = "rate_limited", code = "rate_limited", key_id = %key.id, "rate limit exceeded");
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "rate limit exceeded for this key",
            ));
        }
        Ok(())
    }

    /// Run the pipeline on the signing pool, record the decision in the
    /// issuance log, and only then hand back the certificate.
    pub async fn issue(
        &self,
        request: IssueRequest,
        key_id: &str,
        endpoint: &'static str,
    ) -> Result<(Issued, Option<LogEvidence>), ApiError> {
        let started = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let class = request.class.clone();
        let profile = request.profile.clone().unwrap_or_default();
        self.authority.submit(request, move |result| {
            let _ = tx.send(result);
        });
        let result = rx.await.unwrap_or(Err(IssueError::PoolClosed));
        let outcome = match result {
            Ok(issued) => {
                let evidence = match &self.log {
                    Some(log) => {
                        match log.append(crate::log::issued_entry(&issued, key_id)).await {
                            Ok(evidence) => Some(evidence),
                            Err(e) => {
                                // Signed but not durably logged: the certificate is
                                // discarded and the client told to retry.
                                tracing::error!(decision = "failed", class = %class, key_id = %key_id, serial = %issued.serial_hex, code = e.code().as_str(), "issuance log: {e}; certificate withheld");
                                return Err(ApiError::new(
                                    e.code(),
                                    "the issuance log is unavailable; nothing was issued",
                                ));
                            }
                        }
                    }
                    None => None,
                };
                metrics()
                    .issued
                    .with_label_values(&[&class, &issued.grant.profile])
                    .inc();
                tracing::info!(
                    decision = "issued",
                    class = %class,
                    profile = %issued.grant.profile,
                    key_id = %key_id,
                    serial = %issued.serial_hex,
                    dns = ?issued.grant.dns_names,
                    ips = ?issued.grant.ip_addrs,
                    uris = ?issued.grant.uris,
                    not_after = %issued.not_after,
                    log_index = evidence.as_ref().map(|e| e.index),
                    "certificate issued"
                );
                Ok((issued, evidence))
            }
            Err(e) => {
                let facts = match &e {
                    IssueError::Denied { facts, .. } => Some(facts.as_ref().clone()),
                    _ => None,
                };
                let error = self.denial(e, &class, &profile, key_id);
                if error.code.http_status() < 500 {
                    self.record_denial(&class, &profile, key_id, &error, facts.as_ref())
                        .await;
                }
                Err(error)
            }
        };
        metrics()
            .pipeline_seconds
            .with_label_values(&[endpoint])
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// Put a denial of an authenticated request in the issuance log. A log
    /// failure here does not change the answer (nothing was issued).
    pub async fn record_denial(
        &self,
        class: &str,
        profile: &str,
        key_id: &str,
        error: &ApiError,
        facts: Option<&policies::CsrFacts>,
    ) {
        let Some(log) = &self.log else { return };
        let mut reasons: Vec<LogReason> = error
            .reasons
            .iter()
            .map(|r| LogReason {
                code: r.code.clone(),
                detail: r.detail.clone(),
            })
            .collect();
        if reasons.is_empty() {
            reasons.push(LogReason {
                code: error.code.as_str().to_string(),
                detail: error.message.clone(),
            });
        }
        let entry = LogEntry {
            seq: 0,
            time: now_rfc3339(),
            log_id: log.log_id().to_string(),
            class: printable(class),
            profile: printable(profile),
            key_id: key_id.to_string(),
            decision: LogDecision::Denied,
            serial: None,
            subject: facts.and_then(|f| f.common_name.as_deref().map(printable)),
            dns: facts
                .map(|f| f.dns_names.iter().map(|n| printable(n)).collect())
                .unwrap_or_default(),
            ips: facts
                .map(|f| f.ip_addrs.iter().map(|ip| ip.to_string()).collect())
                .unwrap_or_default(),
            uris: facts
                .map(|f| f.uris.iter().map(|u| printable(u)).collect())
                .unwrap_or_default(),
            not_before: None,
            not_after: None,
            spki_sha256: None,
            issuer: None,
            certificate: None,
            reasons,
        };
        if let Err(e) = log.append(entry).await {
            tracing::error!(event = "log_denial_failed", class = %printable(class), key_id = %key_id, "{e}");
        }
    }

    fn denial(&self, e: IssueError, class: &str, profile: &str, key_id: &str) -> ApiError {
        let code = e.code();
        let class_label = class_label(self, class);
        match &e {
            IssueError::Denied { reasons, .. } => {
                for r in reasons {
                    metrics()
                        .denied
                        .with_label_values(&[class_label, r.code.as_str()])
                        .inc();
                }
                let codes: Vec<&str> = reasons.iter().map(|r| r.code.as_str()).collect();
                tracing::warn!(decision = "denied", class = %class, profile = %printable(profile), key_id = %key_id, reasons = ?codes, "{e}");
            }
            _ if code.http_status() >= 500 => {
                tracing::error!(decision = "failed", class = %class, key_id = %key_id, code = code.as_str(), "{e}");
            }
            _ => {
                metrics()
                    .denied
                    .with_label_values(&[class_label, code.as_str()])
                    .inc();
                tracing::warn!(decision = "denied", class = %class, key_id = %key_id, code = code.as_str(), "{e}");
            }
        }
        let message = match &e {
            IssueError::Denied { .. } => "request denied by class policy".to_string(),
            // Internal details stay in the server log.
            _ if code.http_status() >= 500 => match code {
                ErrorCode::HsmUnavailable => "the HSM is unavailable; try again".to_string(),
                _ => "internal error".to_string(),
            },
            other => other.to_string(),
        };
        let mut error = ApiError::new(code, message);
        if let IssueError::Denied { reasons, .. } = e {
            error.reasons = reasons
                .into_iter()
                .map(|r| ReasonBody {
                    code: r.code.as_str().to_string(),
                    detail: r.detail,
                })
                .collect();
        }
        error
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Metric label for a class: known classes by name, anything else "unknown"
/// (so that clients cannot create unbounded label values).
fn class_label<'a>(app: &'a App, class: &str) -> &'a str {
    app.authority
        .policies()
        .names()
        .find(|n| *n == class)
        .unwrap_or("unknown")
}

/// Client-supplied text in messages and logs: escaped and truncated.
pub fn printable(s: &str) -> String {
    let escaped: String = s.chars().flat_map(char::escape_debug).take(80).collect();
    escaped
}

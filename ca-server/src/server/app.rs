//! Shared request-handling state and the steps every signing endpoint takes
//! around the pipeline, in this order: authenticate (native HMAC or CFSSL
//! token), rate-limit the key, remember the nonce (native), check the key's
//! scope, run the pipeline, record the decision.
//!
//! The order is the fairness rule: nothing a key's holder sends costs more
//! than a MAC before its rate limit has said yes, so a key that is being
//! refused cannot make the server decode, sign, fsync or log for it, and its
//! nonces land only in its own share of the replay cache.

use super::keys::{AuthKey, AuthKeys};
use super::ratelimit::RateLimiter;
use super::respond::ApiError;
use super::throttle::Throttle;
use crate::issue::{Authority, Caller, IssueError, IssueRequest, Issued, Scope};
use crate::log::IssuanceLog;
use crate::metrics::metrics;
use ca_proto::auth::{parse_authorization, verify};
use ca_proto::replay::KeyedReplayCache;
use ca_proto::{ErrorCode, ReasonBody};
use std::sync::Arc;
use std::time::Instant;

pub struct App {
    pub authority: Arc<Authority>,
    pub keys: AuthKeys,
    /// None only with `--no-log` (benchmarks).
    pub log: Option<IssuanceLog>,
    /// One bounded share per auth key (see `KeyedReplayCache`).
    pub replay: KeyedReplayCache,
    pub limiter: RateLimiter,
    pub max_body_bytes: usize,
    pub max_skew_secs: i64,
    /// Verifies MACs under unknown key ids, so that an unknown key id costs
    /// the same work and gets the same answer as a wrong secret.
    dummy_secret: [u8; 32],
    /// Bounds tracing lines about refusals (auth failures, rate limits).
    throttle: Throttle,
    /// Revocation state (CRLs, OCSP, `POST /v1/revoke`), set by `serve`.
    pub revocations: std::sync::OnceLock<Arc<crate::revoke::Revocations>>,
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
        // A key's share: what its rate limit can use while nonces are still
        // replayable (burst + rate × 2 × window), at most the configured
        // entries per key.
        let share = |k: &AuthKey| {
            let need = k.burst + k.rate_per_second * 2.0 * max_skew_secs.max(1) as f64;
            (need.ceil() as usize).clamp(1, replay_cache_entries.max(1))
        };
        let replay = KeyedReplayCache::new(
            keys.iter().map(|k| (k.id.as_str(), share(k))),
            max_skew_secs,
        );
        let mut dummy_secret = [0u8; 32];
        // A fixed dummy would also be safe (no key has it as its secret:
        // the MAC is simply never right); random costs nothing.
        let _ = getrandom::getrandom(&mut dummy_secret);
        App {
            authority,
            keys,
            log,
            replay,
            limiter: RateLimiter::default(),
            max_body_bytes,
            max_skew_secs,
            dummy_secret,
            throttle: Throttle::default(),
            revocations: std::sync::OnceLock::new(),
        }
    }

    /// Verify a native `Authorization` header over this exact request,
    /// rate-limit its key, then remember its nonce in the key's share of the
    /// replay cache. A caller without the secret gets `unauthenticated`
    /// whatever it sent (unknown key id, wrong MAC, malformed header, or a
    /// stale timestamp under any of those); refusals are traced at a bounded
    /// rate with escaped, truncated request targets.
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
            let key = self.keys.get(&parsed.key_id);
            let dummy: [&[u8]; 1] = [&self.dummy_secret];
            let secrets = key.map_or_else(|| dummy.to_vec(), |k| k.secrets());
            verify(
                &parsed,
                &secrets,
                method,
                path_and_query,
                body,
                now,
                self.max_skew_secs,
            )?;
            let key = key.ok_or(ca_proto::auth::AuthError::UnknownKey)?;
            Ok::<_, ca_proto::auth::AuthError>((key, parsed))
        })();
        let (key, parsed) = result.map_err(|e| self.auth_failed(&e, path_and_query))?;
        self.admit(key)?;
        let replay = self
            .replay
            .check_and_insert(&parsed.key_id, &parsed.nonce, parsed.ts, now);
        replay.map_err(|e| {
            tracing::warn!(event = "auth_denied", code = e.code().as_str(), key_id = %key.id, "replay check failed");
            ApiError::new(e.code(), "request nonce was already used or cannot be checked")
        })?;
        Ok(key)
    }

    /// Before the body is read: the `Authorization` header must at least
    /// parse (scheme, key id syntax, timestamp syntax, nonce format). This
    /// does not look the key up, so the answer is the same for every key id.
    pub fn precheck_native(
        &self,
        header: Option<&str>,
        path_and_query: &str,
    ) -> Result<(), ApiError> {
        header
            .ok_or(ca_proto::auth::AuthError::Missing)
            .and_then(parse_authorization)
            .map(|_| ())
            .map_err(|e| self.auth_failed(&e, path_and_query))
    }

    fn auth_failed(&self, e: &ca_proto::auth::AuthError, path_and_query: &str) -> ApiError {
        metrics()
            .auth_failures
            .with_label_values(&[e.code().as_str()])
            .inc();
        if let Some(suppressed) = self.throttle.allow("auth_denied") {
            tracing::warn!(
                event = "auth_denied",
                code = e.code().as_str(),
                path = %printable(path_and_query),
                suppressed,
                "{}",
                e.public_message()
            );
        }
        ApiError::new(e.code(), e.public_message())
    }

    /// Find the CFSSL-enabled key whose secret made `token` over
    /// `request_bytes` (every key is tried, each in constant time; secrets
    /// are distinct across keys, so at most one matches), then rate-limit it.
    pub fn authenticate_cfssl(
        &self,
        request_bytes: &[u8],
        token: &[u8],
    ) -> Result<&AuthKey, ApiError> {
        let mut found = None;
        for key in self.keys.iter().filter(|k| k.cfssl) {
            let ok = ca_proto::cfssl::verify_token(&key.secrets(), request_bytes, token).is_ok();
            if ok && found.is_none() {
                found = Some(key);
            }
        }
        let Some(key) = found else {
            // The same count, throttled trace and answer as a native failure.
            return Err(self.auth_failed(
                &ca_proto::auth::AuthError::BadSignature,
                ca_proto::routes::PATH_CFSSL_AUTHSIGN,
            ));
        };
        self.admit(key)?;
        Ok(key)
    }

    /// The key's rate limit: the first thing after its MAC verified, before
    /// anything that costs. Refusals are counted; traced once a second per
    /// key at most; never appended to the issuance log.
    fn admit(&self, key: &AuthKey) -> Result<(), ApiError> {
        if self.limiter.allow(&key.id, key.rate_per_second, key.burst) {
            return Ok(());
        }
        metrics()
            .rate_limited
            .with_label_values(&[key.id.as_str()])
            .inc();
        if let Some(suppressed) = self.throttle.allow(&key.id) {
            tracing::warn!(event = "rate_limited", code = "rate_limited", key_id = %key.id, suppressed, "rate limit exceeded");
        }
        Err(ApiError::new(
            ErrorCode::RateLimited,
            "rate limit exceeded for this key",
        ))
    }

    /// A class the server knows, and the profile a request means (the class
    /// default when none is named): the authority's one resolution.
    pub fn resolve_profile(&self, class: &str, profile: Option<&str>) -> Result<String, ApiError> {
        self.authority
            .resolve_profile(class, profile)
            .map_err(|e| ApiError::new(e.code(), e.to_string()))
    }

    /// Ask the authority, which decides, signs and records in one call (a
    /// refusal the requester caused is recorded too), then count and trace
    /// the outcome and turn a refusal into the API's error.
    pub async fn issue(
        &self,
        request: IssueRequest,
        key: &AuthKey,
        endpoint: &'static str,
    ) -> Result<Issued, ApiError> {
        let started = Instant::now();
        let class = request.class.clone();
        let profile = request.profile.clone().unwrap_or_default();
        let caller = Caller {
            key_id: &key.id,
            scope: key,
        };
        let outcome = match self.authority.issue(request, &caller).await {
            Ok(issued) => {
                metrics()
                    .issued
                    .with_label_values(&[&class, issued.grant.profile()])
                    .inc();
                tracing::info!(
                    decision = "issued",
                    class = %class,
                    profile = %issued.grant.profile(),
                    key_id = %key.id,
                    serial = %issued.serial_hex,
                    dns = ?issued.grant.dns_names(),
                    ips = ?issued.grant.ip_addrs(),
                    uris = ?issued.grant.uris(),
                    not_after = %issued.not_after,
                    log_index = issued.logged.as_ref().map(|l| l.seq()),
                    "certificate issued"
                );
                Ok(issued)
            }
            Err(e) => Err(self.denial(e, &class, &profile, &key.id)),
        };
        metrics()
            .pipeline_seconds
            .with_label_values(&[endpoint])
            .observe(started.elapsed().as_secs_f64());
        outcome
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
            IssueError::NotRecorded(_) | IssueError::NoRecorder => {
                "the issuance log is unavailable; nothing was issued".to_string()
            }
            IssueError::Suspended { class, .. } => format!(
                "class '{class}' is not issuing: its active intermediate's key is not available on this replica; try again or another replica"
            ),
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

impl Scope for AuthKey {
    fn allows(&self, class: &str, profile: &str) -> bool {
        self.may_use_class(class) && self.may_use_profile(profile)
    }
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

/// Client-supplied text in messages and logs (one home: the authority's).
pub use crate::issue::printable;

//! Who is calling, and what they may do.
//!
//! **Authentication** turns the `Authorization` header into a
//! [`Principal`](nebula_core::users::Principal): the local admin of [`AuthConfig`] (Basic or
//! Bearer), or a user of the store by Basic (`user_name` + password) or Bearer (their token).
//! Users' secrets are bcrypt hashes; the [`Authenticator`] finds a token's user without scanning
//! (one token bucket read, see [`nebula_core::users`]) and remembers successful verifications,
//! so a request costs at most a few bcrypt verifications and usually none.
//!
//! **Authorization** is one [`Rule`] per route, in the route catalogue
//! ([`crate::catalogue::ROUTES`]): what the caller needs. The router's gate checks it before any
//! handler runs: 401 when unauthenticated, 403
//! `{"access_allowed": false}` when not allowed. The router serves only the catalogue's rows, so
//! no route is without a rule.
//!
//! Secrets are compared in constant time and never logged.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;
use nebula_core::manager::Manager;
use nebula_core::users::{Access, ObjectKind, Principal, TokenHash, token_index};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::ttl_cache::TtlCache;

/// Who may call the API.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// When false, every call is allowed (turn off only on purpose).
    pub enabled: bool,
    /// The local admin's user name (`BASIC_AUTH_USER`).
    pub user: Option<String>,
    /// The local admin's password (`BASIC_AUTH_PASSWORD`).
    pub password: Option<String>,
    /// The local admin's bearer token (`AUTH_TOKEN`).
    pub token: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// The credentials of a request.
enum Credential {
    Basic { user: Vec<u8>, password: Vec<u8> },
    Bearer(String),
}

fn credential(headers: &HeaderMap) -> Option<Credential> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let mut decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        let password = decoded.split_off(colon + 1);
        decoded.truncate(colon);
        Some(Credential::Basic {
            user: decoded,
            password,
        })
    } else if scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty() {
        Some(Credential::Bearer(credentials.to_owned()))
    } else {
        None
    }
}

impl AuthConfig {
    fn is_local_admin(&self, credential: &Credential) -> bool {
        match credential {
            Credential::Basic { user, password } => match (&self.user, &self.password) {
                (Some(u), Some(p)) => same(user, u.as_bytes()) & same(password, p.as_bytes()),
                _ => false,
            },
            Credential::Bearer(token) => self
                .token
                .as_ref()
                .is_some_and(|t| same(token.as_bytes(), t.as_bytes())),
        }
    }

    /// Whether the request's `Authorization` header is the local admin's (or auth is off).
    #[must_use]
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        !self.enabled || credential(headers).is_some_and(|c| self.is_local_admin(&c))
    }
}

/// The bcrypt cost of new hashes by default (`NEBULA_BCRYPT_COST`).
pub const DEFAULT_BCRYPT_COST: u32 = 12;
/// The lowest bcrypt cost (for tests; too cheap for production).
pub const MIN_BCRYPT_COST: u32 = 4;
/// The highest bcrypt cost.
pub const MAX_BCRYPT_COST: u32 = 31;
/// Longest password or token: bcrypt takes 72 bytes including the NUL it appends, and longer
/// secrets are refused (400) rather than silently truncated.
pub const MAX_SECRET_BYTES: usize = 71;
/// How long a successful verification is remembered.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// How many verifications are remembered.
const CACHE_CAPACITY: usize = 10_000;
/// Most bcrypt verifications of one token: a bucket holds about users / 65,536 entries.
const MAX_TOKEN_CANDIDATES: usize = 16;

/// A remembered verification: whose credential, and the hash it matched.
#[derive(Clone)]
struct Verified {
    user_name: String,
    hash: String,
}

/// Verifies users' credentials against their bcrypt hashes, and hashes new secrets.
///
/// Successful verifications are remembered for a few minutes, keyed by a keyed SHA-256 of the
/// credential (the key is random per process), together with the hash they matched. A
/// remembered verification stands only while the user's document still holds that hash, so a
/// changed password or token, or a deleted user, is refused at once, on every manager.
pub struct Authenticator {
    cost: u32,
    key: [u8; 32],
    cache: TtlCache<[u8; 32], Verified>,
    verifications: AtomicU64,
    dummy: OnceLock<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("bcrypt_cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new(DEFAULT_BCRYPT_COST)
    }
}

impl Authenticator {
    /// An authenticator hashing new secrets at `bcrypt_cost` (clamped to 4..=31).
    #[must_use]
    pub fn new(bcrypt_cost: u32) -> Self {
        Self {
            cost: bcrypt_cost.clamp(MIN_BCRYPT_COST, MAX_BCRYPT_COST),
            key: rand::random(),
            cache: TtlCache::new(CACHE_TTL, CACHE_CAPACITY),
            verifications: AtomicU64::new(0),
            dummy: OnceLock::new(),
        }
    }

    /// The cost of new hashes.
    #[must_use]
    pub fn bcrypt_cost(&self) -> u32 {
        self.cost
    }

    /// How many bcrypt verifications this authenticator has run (a metric, and what tests use
    /// to show that token authentication does not scan).
    #[must_use]
    pub fn bcrypt_verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// A new random token: 32 random bytes, URL-safe base64 (as Python's
    /// `secrets.token_urlsafe()`).
    #[must_use]
    pub fn new_token() -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    }

    /// Hashes a secret with bcrypt, off the async threads.
    ///
    /// # Errors
    /// [`ApiError::Internal`] if hashing fails (a secret longer than [`MAX_SECRET_BYTES`]).
    pub async fn hash_secret(&self, secret: String) -> Result<String, ApiError> {
        let cost = self.cost;
        tokio::task::spawn_blocking(move || bcrypt::non_truncating_hash(secret, cost))
            .await
            .map_err(|e| ApiError::Internal(format!("hash task: {e}")))?
            .map_err(|e| ApiError::Internal(format!("hash: {e}")))
    }

    /// Hashes and indexes a token.
    ///
    /// # Errors
    /// As [`Self::hash_secret`].
    pub async fn hash_token(&self, token: &str) -> Result<TokenHash, ApiError> {
        Ok(TokenHash {
            hash: self.hash_secret(token.to_owned()).await?,
            index: token_index(token),
        })
    }

    async fn verify(&self, secret: Vec<u8>, hash: String) -> bool {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            bcrypt::non_truncating_verify(secret, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    fn cache_key(&self, scheme: &[u8], user: &[u8], secret: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        for part in [scheme, user, secret] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }

    fn cached(&self, key: &[u8; 32]) -> Option<(String, String)> {
        self.cache.get(key).map(|v| (v.user_name, v.hash))
    }

    fn remember(&self, key: [u8; 32], user_name: &str, hash: &str) {
        self.cache.insert(
            key,
            Verified {
                user_name: user_name.to_owned(),
                hash: hash.to_owned(),
            },
        );
    }

    fn forget_key(&self, key: &[u8; 32]) {
        self.cache.invalidate([key]);
    }

    /// Forgets the remembered verifications of a user (called when the user changes).
    pub fn forget(&self, user_name: &str) {
        self.cache.retain(|_, v| v.user_name != user_name);
    }

    /// Who the request's credentials name: `Ok(None)` when there are none or they are wrong.
    ///
    /// # Errors
    /// Store failures.
    pub async fn principal(
        &self,
        config: &AuthConfig,
        manager: &Manager,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, ApiError> {
        if !config.enabled {
            return Ok(Some(Principal::Anonymous));
        }
        let Some(credential) = credential(headers) else {
            return Ok(None);
        };
        if config.is_local_admin(&credential) {
            return Ok(Some(Principal::LocalAdmin));
        }
        let user = match credential {
            Credential::Basic { user, password } => self.basic(manager, user, password).await?,
            Credential::Bearer(token) => self.bearer(manager, token).await?,
        };
        let Some(name) = user else {
            return Ok(None);
        };
        let permissions = manager.permissions(&name).await?;
        Ok(Some(Principal::User { name, permissions }))
    }

    /// A user by name and password: one document read and at most one verification.
    async fn basic(
        &self,
        manager: &Manager,
        user: Vec<u8>,
        password: Vec<u8>,
    ) -> Result<Option<String>, ApiError> {
        let Ok(name) = String::from_utf8(user) else {
            return Ok(None);
        };
        if password.len() > MAX_SECRET_BYTES {
            return Ok(None);
        }
        let Some(stored) = manager.find_user(&name).await? else {
            // As slow as a wrong password, so user names cannot be probed by timing.
            let dummy = match self.dummy.get() {
                Some(dummy) => dummy.clone(),
                None => {
                    let dummy = self.hash_secret("nebula-dummy".into()).await?;
                    self.dummy.get_or_init(|| dummy).clone()
                }
            };
            self.verify(password, dummy).await;
            return Ok(None);
        };
        let key = self.cache_key(b"basic", name.as_bytes(), &password);
        if let Some((cached_user, hash)) = self.cached(&key) {
            if cached_user == name && bool::from(hash.as_bytes().ct_eq(stored.password.as_bytes()))
            {
                return Ok(Some(name));
            }
            self.forget_key(&key);
        }
        if self.verify(password, stored.password.clone()).await {
            self.remember(key, &name, &stored.password);
            return Ok(Some(name));
        }
        Ok(None)
    }

    /// A user by token: one bucket read and a verification per entry of the bucket (about one),
    /// or none when remembered.
    async fn bearer(&self, manager: &Manager, token: String) -> Result<Option<String>, ApiError> {
        if token.len() > MAX_SECRET_BYTES {
            return Ok(None);
        }
        let key = self.cache_key(b"bearer", b"", token.as_bytes());
        if let Some((name, hash)) = self.cached(&key) {
            if manager
                .find_user(&name)
                .await?
                .is_some_and(|u| bool::from(u.token.as_bytes().ct_eq(hash.as_bytes())))
            {
                return Ok(Some(name));
            }
            self.forget_key(&key);
        }
        let candidates = manager.token_candidates(&token_index(&token)).await?;
        if candidates.len() > MAX_TOKEN_CANDIDATES {
            tracing::warn!(
                entries = candidates.len(),
                "a token bucket is unusually large; only the first {MAX_TOKEN_CANDIDATES} entries are tried"
            );
        }
        for candidate in candidates.into_iter().take(MAX_TOKEN_CANDIDATES) {
            if !self
                .verify(token.as_bytes().to_vec(), candidate.token.clone())
                .await
            {
                continue;
            }
            // The entry stands only while the user still holds this very token.
            let holds = manager
                .find_user(&candidate.user_name)
                .await?
                .is_some_and(|u| bool::from(u.token.as_bytes().ct_eq(candidate.token.as_bytes())));
            if holds {
                self.remember(key, &candidate.user_name, &candidate.token);
                return Ok(Some(candidate.user_name));
            }
        }
        Ok(None)
    }
}

/// What a route needs from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Any authenticated caller (lists, status).
    Authenticated,
    /// Admins (users and user groups).
    Admin,
    /// Callers allowed to prune images.
    Pruning,
    /// `access` on the object named by the path parameter `param`.
    Object {
        /// The kind of object.
        kind: ObjectKind,
        /// The path parameter holding its name.
        param: &'static str,
        /// The access needed.
        access: Access,
    },
}

impl Rule {
    /// Whether `principal` may call a route with this rule; `params` are the route's path
    /// parameters (percent-decoded).
    #[must_use]
    pub fn allows<'a>(
        self,
        principal: &Principal,
        mut params: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> bool {
        match self {
            Self::Authenticated => true,
            Self::Admin => principal.is_admin(),
            Self::Pruning => principal.can_prune(),
            Self::Object {
                kind,
                param,
                access,
            } => {
                principal.is_admin()
                    || params
                        .find(|(k, _)| *k == param)
                        .is_some_and(|(_, name)| principal.can(kind, name, access))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use nebula_core::users::Permissions;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(v).unwrap(),
        );
        h
    }

    fn basic(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    #[test]
    fn admits_only_the_admin() {
        let auth = AuthConfig {
            enabled: true,
            user: Some("admin".into()),
            password: Some("s3cret:x".into()),
            token: Some("tok".into()),
        };
        assert!(auth.admits(&headers(&basic("admin", "s3cret:x"))));
        assert!(auth.admits(&headers("Bearer tok")));
        assert!(!auth.admits(&headers(&basic("admin", "wrong"))));
        assert!(!auth.admits(&headers(&basic("root", "s3cret:x"))));
        assert!(!auth.admits(&headers("Bearer nope")));
        assert!(!auth.admits(&headers("Basic !!!")));
        assert!(!auth.admits(&HeaderMap::new()));
        assert!(AuthConfig::default().admits(&HeaderMap::new()));
        let no_token = AuthConfig {
            token: None,
            ..auth
        };
        assert!(!no_token.admits(&headers("Bearer ")));
    }

    const AUTH: Rule = Rule::Authenticated;
    const ADMIN: Rule = Rule::Admin;
    const APP_RO: Rule = Rule::Object {
        kind: ObjectKind::App,
        param: "app",
        access: Access::Ro,
    };
    const APP_RW: Rule = Rule::Object {
        kind: ObjectKind::App,
        param: "app",
        access: Access::Rw,
    };

    #[test]
    fn rules_allow_by_principal() {
        let ro = Principal::User {
            name: "u".into(),
            permissions: Permissions {
                apps: [("site".to_owned(), Access::Ro)].into(),
                ..Permissions::default()
            },
        };
        let params = [("app", "site")];
        assert!(APP_RO.allows(&ro, params.iter().copied()));
        assert!(!APP_RW.allows(&ro, params.iter().copied()));
        assert!(!APP_RO.allows(&ro, [("app", "other")].into_iter()));
        assert!(!APP_RO.allows(&ro, std::iter::empty()));
        assert!(AUTH.allows(&ro, std::iter::empty()));
        assert!(!ADMIN.allows(&ro, std::iter::empty()));
        assert!(!Rule::Pruning.allows(&ro, std::iter::empty()));
        assert!(APP_RW.allows(&Principal::LocalAdmin, std::iter::empty()));
    }

    #[test]
    fn new_tokens_are_random_and_url_safe() {
        let a = Authenticator::new_token();
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, Authenticator::new_token());
        assert_eq!(Authenticator::new(1).bcrypt_cost(), MIN_BCRYPT_COST);
    }
}

//! Authentication of API calls: the configured local admin, by Basic or Bearer.
//!
//! Secrets are compared in constant time (digests of equal length, compared with `subtle`),
//! and never logged.

use axum::http::HeaderMap;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

impl AuthConfig {
    /// Whether the request's `Authorization` header admits it.
    #[must_use]
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        if !self.enabled {
            return true;
        }
        let Some(value) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
                return false;
            };
            let Some(colon) = decoded.iter().position(|b| *b == b':') else {
                return false;
            };
            let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
            match (&self.user, &self.password) {
                (Some(u), Some(p)) => same(user, u.as_bytes()) & same(password, p.as_bytes()),
                _ => false,
            }
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.token
                .as_ref()
                .is_some_and(|t| same(credentials.as_bytes(), t.as_bytes()))
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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
}

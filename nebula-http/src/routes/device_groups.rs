//! v2 device group routes, `POST /api/v2/prune`, and the `/info` cache.
//!
//! `/info` is what every worker of a group polls, so its replies are kept per device group in
//! a per-process TTL cache (`CACHE_TIME`, `CACHE_MAX_SIZE`, least recently used first out).
//! The cache sits behind authentication (the middleware runs before any handler), is
//! invalidated by every write through this process that can change a group's state, and each
//! reply carries an ETag so a worker whose state is current gets a bodiless 304.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use nebula_core::device_group::{DeviceGroup, DeviceGroupName, Members, MembersPatch};
use nebula_core::model::AppName;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Body, Reply};
use crate::error::ApiError;
use crate::state::ApiState;
use crate::ttl_cache::TtlCache;

/// How `/info` replies are cached in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoCacheConfig {
    /// How long a reply is served from the cache (`CACHE_TIME`, 10 s); zero turns it off.
    pub ttl: Duration,
    /// How many device groups are cached at most (`CACHE_MAX_SIZE`, 1024); zero turns it off.
    pub max_size: usize,
}

impl Default for InfoCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            max_size: 1024,
        }
    }
}

/// One cached `/info` reply.
#[derive(Debug)]
struct CachedInfo {
    body: Bytes,
    etag: HeaderValue,
}

/// The per-process `/info` cache, keyed by device group.
#[derive(Debug)]
pub(crate) struct InfoCache(TtlCache<DeviceGroupName, Arc<CachedInfo>>);

impl InfoCache {
    pub(crate) fn new(config: InfoCacheConfig) -> Self {
        Self(TtlCache::new(config.ttl, config.max_size))
    }

    /// The cached reply, if fresh, and the generation to store a new one under otherwise.
    fn get(&self, group: &DeviceGroupName) -> Result<Arc<CachedInfo>, u64> {
        self.0.lookup(group)
    }

    /// Stores a reply read at `generation`, unless something was invalidated since.
    fn insert(&self, group: &DeviceGroupName, info: Arc<CachedInfo>, generation: u64) {
        self.0.insert_at(group.clone(), info, generation);
    }

    /// Forgets one group's reply.
    fn invalidate(&self, group: &DeviceGroupName) {
        self.0.invalidate([group]);
    }

    /// Forgets the replies of `groups`.
    fn invalidate_all(&self, groups: &[DeviceGroupName]) {
        self.0.invalidate(groups);
    }

    /// Forgets every reply.
    fn clear(&self) {
        self.0.clear();
    }
}

/// The device groups an app or cron job write changed, as the manager computed them: a reply
/// extension that [`clear_after_app_writes`] reads. `None`: unknown, so every group.
#[derive(Clone, Debug)]
pub(crate) struct TouchedGroups(pub(crate) Option<Vec<DeviceGroupName>>);

/// `response`, telling the `/info` cache which groups the write changed.
pub(crate) fn touching(
    response: impl IntoResponse,
    device_groups: Option<Vec<DeviceGroupName>>,
) -> Response {
    let mut response = response.into_response();
    response
        .extensions_mut()
        .insert(TouchedGroups(device_groups));
    response
}

/// Wraps the whole API with the `/info` cache: handlers find it as an extension, and a
/// successful app or cron job write through this process forgets the replies of the groups
/// that list the document (their documents are part of `/info`), as the manager computed them
/// ([`TouchedGroups`]); every reply when the handler did not say.
pub(crate) fn with_info_cache(api: Router<ApiState>, config: InfoCacheConfig) -> Router<ApiState> {
    api.layer(middleware::from_fn(clear_after_app_writes))
        .layer(Extension(Arc::new(InfoCache::new(config))))
}

async fn clear_after_app_writes(
    Extension(cache): Extension<Arc<InfoCache>>,
    request: Request,
    next: Next,
) -> Response {
    let writes_app = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) && (request.uri().path().starts_with("/api/apps/")
        || request.uri().path().starts_with("/api/v2/apps/")
        || request.uri().path().starts_with("/api/v2/cron_jobs/"));
    let mut response = next.run(request).await;
    let touched = response.extensions_mut().remove::<TouchedGroups>();
    if writes_app && response.status().is_success() {
        match touched {
            Some(TouchedGroups(Some(groups))) => cache.invalidate_all(&groups),
            _ => cache.clear(),
        }
    }
    response
}

fn reply(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

fn group_name(raw: &str) -> Result<DeviceGroupName, ApiError> {
    Ok(DeviceGroupName::parse(raw)?)
}

fn doc(group: &DeviceGroup) -> Value {
    serde_json::to_value(group).unwrap_or(Value::Null)
}

/// Fields of the stored document a client may echo back; ignored.
const READ_ONLY: [&str; 5] = [
    "device_group",
    "device_group_id",
    "prune_id",
    "incarnation",
    "_id",
];

/// Reads `apps` and `cron_jobs` from a body; with `full`, an absent list is `[]`.
fn members(body: &Map<String, Value>, full: bool) -> Result<MembersPatch, ApiError> {
    let unknown: Vec<nebula_core::validate::FieldError> = body
        .keys()
        .filter(|k| !matches!(k.as_str(), "apps" | "cron_jobs") && !READ_ONLY.contains(&k.as_str()))
        .map(|k| {
            nebula_core::validate::FieldError::new(
                k.clone(),
                "is not a device group field; settable fields are apps, cron_jobs",
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::Invalid(unknown));
    }
    let list = |key: &'static str| -> Result<Option<Vec<String>>, ApiError> {
        match body.get(key) {
            None if full => Ok(Some(Vec::new())),
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_owned).ok_or_else(|| {
                        nebula_core::validate::FieldError::new(key, "must be a list of names")
                            .into()
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(ApiError::NotAList(key)),
        }
    };
    let apps = list("apps")?;
    let cron_jobs = list("cron_jobs")?;
    let apps = match apps {
        Some(names) => Some(
            names
                .iter()
                .map(|n| {
                    // A name no app can have names no app that exists.
                    AppName::parse(n).map_err(|_| ApiError::AppNotFound)
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    Ok(MembersPatch { apps, cron_jobs })
}

pub(crate) async fn list(State(s): State<ApiState>) -> Reply {
    let groups = s.manager.list_device_groups().await?;
    Ok(Json(json!({ "device_groups": groups })).into_response())
}

pub(crate) async fn get_one(State(s): State<ApiState>, Path(dg): Path<String>) -> Reply {
    let name = group_name(&dg)?;
    let group = s.manager.get_device_group(&name).await?;
    Ok(Json(doc(&group)).into_response())
}

pub(crate) async fn create(
    State(s): State<ApiState>,
    Extension(cache): Extension<Arc<InfoCache>>,
    Path(dg): Path<String>,
    Body(body): Body,
) -> Reply {
    let name = group_name(&dg)?;
    let patch = members(&body, true)?;
    let group = s
        .manager
        .create_device_group(
            name.clone(),
            Members {
                apps: patch.apps.unwrap_or_default(),
                cron_jobs: patch.cron_jobs.unwrap_or_default(),
            },
        )
        .await?;
    cache.invalidate(&name);
    Ok(reply(StatusCode::OK, doc(&group)))
}

pub(crate) async fn delete(
    State(s): State<ApiState>,
    Extension(cache): Extension<Arc<InfoCache>>,
    Path(dg): Path<String>,
) -> Reply {
    let name = group_name(&dg)?;
    let result = s.manager.delete_device_group(&name).await;
    cache.invalidate(&name);
    result?;
    Ok(reply(StatusCode::OK, json!({})))
}

pub(crate) async fn update_full(
    State(s): State<ApiState>,
    Extension(cache): Extension<Arc<InfoCache>>,
    Path(dg): Path<String>,
    Body(body): Body,
) -> Reply {
    let name = group_name(&dg)?;
    let patch = members(&body, true)?;
    let group = s
        .manager
        .update_device_group(
            &name,
            Members {
                apps: patch.apps.unwrap_or_default(),
                cron_jobs: patch.cron_jobs.unwrap_or_default(),
            },
        )
        .await?;
    cache.invalidate(&name);
    Ok(reply(StatusCode::ACCEPTED, doc(&group)))
}

pub(crate) async fn update_patch(
    State(s): State<ApiState>,
    Extension(cache): Extension<Arc<InfoCache>>,
    Path(dg): Path<String>,
    Body(body): Body,
) -> Reply {
    let name = group_name(&dg)?;
    if body.is_empty() {
        return Err(ApiError::NothingToChange);
    }
    let patch = members(&body, false)?;
    if patch.is_empty() {
        // Only read-only fields were sent.
        return Err(ApiError::NothingToChange);
    }
    let group = s.manager.patch_device_group(&name, patch).await?;
    cache.invalidate(&name);
    Ok(reply(StatusCode::ACCEPTED, doc(&group)))
}

pub(crate) async fn prune_one(
    State(s): State<ApiState>,
    Extension(cache): Extension<Arc<InfoCache>>,
    Path(dg): Path<String>,
) -> Reply {
    let name = group_name(&dg)?;
    let group = s.manager.prune_device_group(&name).await?;
    cache.invalidate(&name);
    Ok(reply(StatusCode::ACCEPTED, doc(&group)))
}

pub(crate) async fn prune_all(
    State(s): State<ApiState>,
    Extension(cache): Extension<Arc<InfoCache>>,
) -> Reply {
    let result = s.manager.prune_all_device_groups().await;
    cache.clear();
    let prune_ids = result?;
    Ok(reply(
        StatusCode::ACCEPTED,
        json!({ "prune_ids": prune_ids }),
    ))
}

/// A strong ETag: a digest of the reply body, which holds the group's versions and every
/// app's (incarnation, `app_id`), so it changes whenever the desired state does.
fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak tags compare by their opaque part.
fn matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(ours) = etag.to_str() else {
        return false;
    };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == ours)
}

pub(crate) async fn info(
    State(s): State<ApiState>,
    Extension(cache): Extension<Arc<InfoCache>>,
    Path(dg): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let name = group_name(&dg)?;
    let cached = match cache.get(&name) {
        Ok(hit) => hit,
        Err(generation) => {
            let info = s.manager.device_group_info(&name).await?;
            let body = serde_json::to_vec(&info).map_err(|e| ApiError::Internal(e.to_string()))?;
            let fresh = Arc::new(CachedInfo {
                etag: etag_of(&body),
                body: Bytes::from(body),
            });
            cache.insert(&name, fresh.clone(), generation);
            fresh
        }
    };
    if matches(&headers, &cached.etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, cached.etag.clone())],
        )
            .into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, cached.etag.clone()),
        ],
        cached.body.clone(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(s: &str) -> DeviceGroupName {
        DeviceGroupName::parse(s).unwrap()
    }

    fn entry(tag: &str) -> Arc<CachedInfo> {
        Arc::new(CachedInfo {
            body: Bytes::from(tag.to_owned()),
            etag: etag_of(tag.as_bytes()),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let cache = InfoCache::new(InfoCacheConfig {
            ttl: Duration::from_secs(10),
            max_size: 4,
        });
        let g = cache.get(&dg("a")).unwrap_err();
        cache.insert(&dg("a"), entry("1"), g);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(cache.get(&dg("a")).unwrap().body, "1");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(cache.get(&dg("a")).is_err());
    }

    #[test]
    fn the_least_recently_used_group_goes_first() {
        let cache = InfoCache::new(InfoCacheConfig {
            ttl: Duration::from_secs(60),
            max_size: 2,
        });
        let g = cache.get(&dg("a")).unwrap_err();
        cache.insert(&dg("a"), entry("a"), g);
        cache.insert(&dg("b"), entry("b"), g);
        assert!(cache.get(&dg("a")).is_ok(), "a used last");
        cache.insert(&dg("c"), entry("c"), g);
        assert!(cache.get(&dg("b")).is_err(), "b was the oldest");
        assert!(cache.get(&dg("a")).is_ok() && cache.get(&dg("c")).is_ok());
        assert_eq!(cache.0.len(), 2);
    }

    #[test]
    fn a_reply_read_before_an_invalidation_is_not_stored() {
        let cache = InfoCache::new(InfoCacheConfig::default());
        let g = cache.get(&dg("a")).unwrap_err();
        cache.invalidate(&dg("a"));
        cache.insert(&dg("a"), entry("old"), g);
        assert!(cache.get(&dg("a")).is_err());
        let off = InfoCache::new(InfoCacheConfig {
            ttl: Duration::ZERO,
            max_size: 8,
        });
        let g = off.get(&dg("a")).unwrap_err();
        off.insert(&dg("a"), entry("x"), g);
        assert!(off.get(&dg("a")).is_err(), "CACHE_TIME=0 turns it off");
    }

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        let tag = etag_of(b"body");
        let mut h = HeaderMap::new();
        assert!(!matches(&h, &tag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{}", tag.to_str().unwrap())).unwrap(),
        );
        assert!(matches(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(matches(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!matches(&h, &tag));
    }
}

//! v2 users and user groups: `/api/v2/users[/<u>[/update|/refresh]]` and
//! `/api/v2/user_groups[/<g>[/update]]`, with the original's codes and bodies.
//!
//! Passwords and tokens are bcrypt-hashed before they reach the store; replies show hashes
//! only, except `/refresh`, whose reply is the one time a token is shown in plain.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use nebula_core::users::{
    Access, Grants, User, UserGroup, UserGroupPatch, UserUpdate, validate_user_group_name,
    validate_user_name,
};
use nebula_core::validate::FieldError;
use serde_json::{Map, Value, json};

use super::Body;
use crate::auth::{Authenticator, MAX_SECRET_BYTES};
use crate::error::ApiError;
use crate::state::ApiState;

use super::Reply;

fn ok(body: Value) -> Reply {
    Ok((StatusCode::OK, Json(body)).into_response())
}

fn user_doc(user: &User) -> Value {
    json!({"user_name": user.user_name, "password": user.password, "token": user.token})
}

fn group_doc(group: &UserGroup) -> Value {
    serde_json::to_value(group).unwrap_or(Value::Null)
}

fn user_name(raw: &str) -> Result<(), ApiError> {
    validate_user_name(raw).map_err(ApiError::from)
}

/// Refuses keys other than `allowed`, ignoring `read_only` ones (echoed documents).
fn check_keys(
    body: &Map<String, Value>,
    allowed: &[&str],
    read_only: &[&str],
) -> Result<(), ApiError> {
    let unknown: Vec<FieldError> = body
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()) && !read_only.contains(&k.as_str()))
        .map(|k| {
            FieldError::new(
                k.clone(),
                format!("is not a settable field; they are {}", allowed.join(", ")),
            )
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(unknown))
    }
}

/// A password or token: a non-empty string of at most 72 bytes (bcrypt's limit).
fn secret(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(FieldError::new(field, "must not be empty").into())
        }
        Some(Value::String(s)) if s.len() > MAX_SECRET_BYTES => {
            Err(FieldError::new(field, format!("must be at most {MAX_SECRET_BYTES} bytes")).into())
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FieldError::new(field, "must be a string").into()),
    }
}

const USER_FIELDS: [&str; 2] = ["password", "token"];
const USER_READ_ONLY: [&str; 1] = ["user_name"];

pub(crate) async fn list_users(State(state): State<ApiState>) -> Reply {
    ok(json!({ "users": state.manager.list_users().await? }))
}

pub(crate) async fn get_user(State(state): State<ApiState>, Path(user): Path<String>) -> Reply {
    ok(user_doc(&state.manager.get_user(&user).await?))
}

pub(crate) async fn create_user(
    State(state): State<ApiState>,
    Extension(authn): Extension<Arc<Authenticator>>,
    Path(user): Path<String>,
    Body(body): Body,
) -> Reply {
    user_name(&user)?;
    if state.manager.find_user(&user).await?.is_some() {
        return Err(ApiError::Exists {
            key: "user_exists",
            exists: true,
        });
    }
    check_keys(&body, &USER_FIELDS, &USER_READ_ONLY)?;
    let password =
        secret(&body, "password")?.ok_or_else(|| ApiError::Missing(vec!["password".into()]))?;
    // As the original: without a token, a random one (shown by `/refresh` only).
    let token = secret(&body, "token")?.unwrap_or_else(Authenticator::new_token);
    let password = authn.hash_secret(password).await?;
    let token = authn.hash_token(&token).await?;
    let created = state.manager.create_user(&user, password, token).await?;
    authn.forget(&user);
    ok(user_doc(&created))
}

pub(crate) async fn update_user(
    State(state): State<ApiState>,
    Extension(authn): Extension<Arc<Authenticator>>,
    Path(user): Path<String>,
    Body(body): Body,
) -> Reply {
    user_name(&user)?;
    if body.is_empty() {
        return Err(ApiError::NothingToChange);
    }
    check_keys(&body, &USER_FIELDS, &USER_READ_ONLY)?;
    let password = secret(&body, "password")?;
    let token = secret(&body, "token")?;
    if password.is_none() && token.is_none() {
        return Err(ApiError::NothingToChange);
    }
    // The original's reply for a missing user here is `{"user_name": false}`.
    let missing = ApiError::Exists {
        key: "user_name",
        exists: false,
    };
    if state.manager.find_user(&user).await?.is_none() {
        return Err(missing);
    }
    let update = UserUpdate {
        password: match password {
            Some(p) => Some(authn.hash_secret(p).await?),
            None => None,
        },
        token: match token {
            Some(t) => Some(authn.hash_token(&t).await?),
            None => None,
        },
    };
    let result = state.manager.update_user(&user, update).await;
    authn.forget(&user);
    match result {
        Ok(updated) => ok(user_doc(&updated)),
        Err(nebula_core::users::UsersError::UserNotFound) => Err(missing),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn refresh_token(
    State(state): State<ApiState>,
    Extension(authn): Extension<Arc<Authenticator>>,
    Path(user): Path<String>,
) -> Reply {
    user_name(&user)?;
    if state.manager.find_user(&user).await?.is_none() {
        return Err(ApiError::Exists {
            key: "user_exists",
            exists: false,
        });
    }
    let plain = Authenticator::new_token();
    let token = authn.hash_token(&plain).await?;
    let result = state
        .manager
        .update_user(
            &user,
            UserUpdate {
                token: Some(token),
                ..UserUpdate::default()
            },
        )
        .await;
    authn.forget(&user);
    result?;
    ok(json!({ "token": plain }))
}

pub(crate) async fn delete_user(
    State(state): State<ApiState>,
    Extension(authn): Extension<Arc<Authenticator>>,
    Path(user): Path<String>,
) -> Reply {
    let result = state.manager.delete_user(&user).await;
    authn.forget(&user);
    result?;
    ok(json!({}))
}

const GROUP_FIELDS: [&str; 6] = [
    "group_members",
    "pruning_allowed",
    "admin",
    "apps",
    "device_groups",
    "cron_jobs",
];
const GROUP_READ_ONLY: [&str; 1] = ["user_group"];

fn bool_field(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, FieldError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(FieldError::new(field, "must be true or false")),
    }
}

fn grants_field(body: &Map<String, Value>, field: &str) -> Result<Option<Grants>, FieldError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, access)| {
                access
                    .as_str()
                    .and_then(Access::parse)
                    .map(|a| (name.clone(), a))
                    .ok_or_else(|| {
                        FieldError::new(format!("{field}.{name}"), "must be \"ro\" or \"rw\"")
                    })
            })
            .collect::<Result<Grants, _>>()
            .map(Some),
        Some(_) => Err(FieldError::new(
            field,
            "must be an object of name: \"ro\" | \"rw\"",
        )),
    }
}

fn members_field(body: &Map<String, Value>) -> Result<Option<Vec<String>>, FieldError> {
    const FIELD: &str = "group_members";
    match body.get(FIELD) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| FieldError::new(format!("{FIELD}[{i}]"), "must be a user name"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(FieldError::new(FIELD, "must be a list of user names")),
    }
}

/// Reads a group body; every error names its field.
fn group_patch(body: &Map<String, Value>) -> Result<UserGroupPatch, ApiError> {
    check_keys(body, &GROUP_FIELDS, &GROUP_READ_ONLY)?;
    let mut errors = Vec::new();
    let mut keep = |e: FieldError| errors.push(e);
    let patch = UserGroupPatch {
        group_members: members_field(body).unwrap_or_else(|e| {
            keep(e);
            None
        }),
        pruning_allowed: bool_field(body, "pruning_allowed").unwrap_or_else(|e| {
            keep(e);
            None
        }),
        admin: bool_field(body, "admin").unwrap_or_else(|e| {
            keep(e);
            None
        }),
        apps: grants_field(body, "apps").unwrap_or_else(|e| {
            keep(e);
            None
        }),
        device_groups: grants_field(body, "device_groups").unwrap_or_else(|e| {
            keep(e);
            None
        }),
        cron_jobs: grants_field(body, "cron_jobs").unwrap_or_else(|e| {
            keep(e);
            None
        }),
    };
    if errors.is_empty() {
        Ok(patch)
    } else {
        Err(ApiError::Invalid(errors))
    }
}

pub(crate) async fn list_groups(State(state): State<ApiState>) -> Reply {
    ok(json!({ "user_groups": state.manager.list_user_groups().await? }))
}

pub(crate) async fn get_group(State(state): State<ApiState>, Path(group): Path<String>) -> Reply {
    ok(group_doc(&state.manager.get_user_group(&group).await?))
}

pub(crate) async fn create_group(
    State(state): State<ApiState>,
    Path(group): Path<String>,
    Body(body): Body,
) -> Reply {
    validate_user_group_name(&group)?;
    let patch = group_patch(&body)?;
    ok(group_doc(
        &state.manager.create_user_group(&group, patch).await?,
    ))
}

pub(crate) async fn update_group(
    State(state): State<ApiState>,
    Path(group): Path<String>,
    Body(body): Body,
) -> Reply {
    validate_user_group_name(&group)?;
    if body.is_empty() {
        return Err(ApiError::NothingToChange);
    }
    let patch = group_patch(&body)?;
    if patch.is_empty() {
        return Err(ApiError::NothingToChange);
    }
    ok(group_doc(
        &state.manager.update_user_group(&group, patch).await?,
    ))
}

pub(crate) async fn delete_group(
    State(state): State<ApiState>,
    Path(group): Path<String>,
) -> Reply {
    state.manager.delete_user_group(&group).await?;
    ok(json!({}))
}

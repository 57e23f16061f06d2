//! v2 cron job routes, with the original's codes and bodies: `{"cron_job_exists": ...}` (403),
//! `{"missing_parameters": [...]}` and `{"schedule_valid": false}` (400).
//!
//! As the original, a route first checks whether the job exists (403), then reads the body
//! (400). Differences on purpose: a bad field other than the schedule is a 400 naming it, and
//! `networks` defaults to `["nebula", "bridge"]` on create too.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nebula_core::cron_job::{CronJob, CronJobName, CronJobPatch, CronJobSpec};
use nebula_core::validate::FieldError;
use serde_json::{Map, Value, json};

use super::device_groups::touching;
use super::{Body, Reply};
use crate::dto;
use crate::error::ApiError;
use crate::state::ApiState;

/// Every field a client may set.
const SETTABLE: [&str; 13] = [
    "schedule",
    "docker_image",
    "env_vars",
    "running",
    "networks",
    "volumes",
    "devices",
    "privileged",
    "memory_limit_mb",
    "cpu_limit",
    "run_command",
    "entrypoint",
    "healthcheck",
];

/// Fields of the stored document a client may echo back but not set; ignored.
const READ_ONLY: [&str; 4] = ["cron_job_name", "cron_job_id", "incarnation", "_id"];

/// The fields a create or full update needs, in the original's order.
const REQUIRED: [&str; 2] = ["docker_image", "schedule"];

fn reply(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

fn job_name(raw: &str) -> Result<CronJobName, ApiError> {
    Ok(CronJobName::parse(raw)?)
}

fn doc(job: &CronJob) -> Value {
    serde_json::to_value(job).unwrap_or(Value::Null)
}

/// 403 `{"cron_job_exists": <exists>}` unless the job's existence is `want`.
async fn expect_exists(s: &ApiState, name: &CronJobName, want: bool) -> Result<(), ApiError> {
    let exists = s.manager.cron_job_exists(name).await?;
    if exists == want {
        Ok(())
    } else {
        Err(ApiError::Exists {
            key: "cron_job_exists",
            exists,
        })
    }
}

/// Reads the fields given; unknown fields and type errors are 400s naming them.
fn patch(body: &Map<String, Value>) -> Result<CronJobPatch, ApiError> {
    let unknown: Vec<FieldError> = body
        .keys()
        .filter(|k| !SETTABLE.contains(&k.as_str()) && !READ_ONLY.contains(&k.as_str()))
        .map(|k| {
            FieldError::new(
                k.clone(),
                format!(
                    "is not a cron job field; settable fields are {}",
                    SETTABLE.join(", ")
                ),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::CronJobInvalid(unknown));
    }
    let mut errors = Vec::new();
    let field = |name: &str| body.get(name).map(|v| (name.to_owned(), v));
    macro_rules! read {
        ($name:literal, $parse:expr) => {
            match field($name) {
                Some((name, v)) => match $parse(v) {
                    Ok(x) => Some(x),
                    Err(rule) => {
                        errors.push(FieldError::new(name, rule));
                        None
                    }
                },
                None => None,
            }
        };
    }
    let p = CronJobPatch {
        schedule: read!("schedule", |v: &Value| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                "must be a 5-field cron schedule as a string, such as \"*/5 * * * *\"".to_owned()
            })
        }),
        docker_image: read!("docker_image", dto::string),
        env_vars: read!("env_vars", dto::env_vars),
        running: read!("running", dto::boolean),
        networks: read!("networks", dto::strings),
        volumes: read!("volumes", dto::strings),
        devices: read!("devices", dto::strings),
        privileged: read!("privileged", dto::boolean),
        memory_limit_mb: read!("memory_limit_mb", |v: &Value| dto::nullable(v, |v| {
            v.as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| "must be a whole number of MB, at least 1".to_owned())
        })),
        cpu_limit: read!("cpu_limit", |v: &Value| dto::nullable(v, |v| {
            v.as_f64()
                .ok_or_else(|| "must be a number of CPUs".to_owned())
        })),
        run_command: read!("run_command", |v: &Value| dto::nullable(v, dto::strings)),
        entrypoint: read!("entrypoint", |v: &Value| dto::nullable(v, dto::strings)),
        healthcheck: dto::healthcheck(body, &mut errors),
    };
    if errors.is_empty() {
        Ok(p)
    } else {
        Err(ApiError::CronJobInvalid(errors))
    }
}

/// Reads a full spec (create, POST update): `docker_image` and `schedule` required, every
/// other field defaulted.
fn spec(body: &Map<String, Value>) -> Result<CronJobSpec, ApiError> {
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|f| body.get(**f).is_none_or(Value::is_null))
        .map(|f| (*f).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::Missing(missing));
    }
    let patch = patch(body)?;
    let mut spec = CronJobSpec::new("", "");
    patch.apply(&mut spec);
    Ok(spec)
}

pub(crate) async fn list(State(s): State<ApiState>) -> Reply {
    let jobs = s.manager.list_cron_jobs().await?;
    Ok(Json(json!({ "cron_jobs": jobs })).into_response())
}

pub(crate) async fn get_one(State(s): State<ApiState>, Path(job): Path<String>) -> Reply {
    let name = job_name(&job)?;
    let job = s.manager.get_cron_job(&name).await?;
    Ok(Json(doc(&job)).into_response())
}

pub(crate) async fn create(
    State(s): State<ApiState>,
    Path(job): Path<String>,
    Body(body): Body,
) -> Reply {
    let name = job_name(&job)?;
    expect_exists(&s, &name, false).await?;
    let spec = spec(&body)?;
    let job = s.manager.create_cron_job_touched(name, spec).await?;
    Ok(touching(
        reply(StatusCode::OK, doc(&job.value)),
        job.device_groups,
    ))
}

pub(crate) async fn delete(State(s): State<ApiState>, Path(job): Path<String>) -> Reply {
    let name = job_name(&job)?;
    let deleted = s.manager.delete_cron_job_touched(&name).await?;
    Ok(touching(
        reply(StatusCode::OK, json!({})),
        deleted.device_groups,
    ))
}

pub(crate) async fn update_full(
    State(s): State<ApiState>,
    Path(job): Path<String>,
    Body(body): Body,
) -> Reply {
    let name = job_name(&job)?;
    expect_exists(&s, &name, true).await?;
    let spec = spec(&body)?;
    let job = s.manager.update_cron_job_touched(&name, spec).await?;
    Ok(touching(
        reply(StatusCode::ACCEPTED, doc(&job.value)),
        job.device_groups,
    ))
}

pub(crate) async fn update_patch(
    State(s): State<ApiState>,
    Path(job): Path<String>,
    Body(body): Body,
) -> Reply {
    let name = job_name(&job)?;
    expect_exists(&s, &name, true).await?;
    if body.is_empty() {
        return Err(ApiError::NothingToChange);
    }
    let patch = patch(&body)?;
    if patch.is_empty() {
        // Only read-only fields: nothing to change.
        return Err(ApiError::NothingToChange);
    }
    let job = s.manager.patch_cron_job_touched(&name, patch).await?;
    Ok(touching(
        reply(StatusCode::ACCEPTED, doc(&job.value)),
        job.device_groups,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn full_bodies_need_image_and_schedule_and_default_the_rest() {
        let s = spec(&map(json!({"docker_image": "x", "schedule": "* * * * *"}))).unwrap();
        assert_eq!(s, CronJobSpec::new("* * * * *", "x"));
        assert!(spec(&map(json!({"docker_image": "x"}))).is_err());
        let p = patch(&map(json!({"cron_job_id": 4, "running": false}))).unwrap();
        assert_eq!(
            p,
            CronJobPatch {
                running: Some(false),
                ..CronJobPatch::default()
            }
        );
        assert!(patch(&map(json!({"bogus": 1}))).is_err());
        assert!(patch(&map(json!({"schedule": 5}))).is_err());
    }
}

//! The route catalogue: one row per route, [`ROUTES`], from which the router, the auth gate's
//! rules and the OpenAPI document are all built.
//!
//! A row names the method, the path (as the router declares it), the [`Rule`] the caller must
//! meet, the handler and the route's OpenAPI operation. The router routes exactly these rows,
//! so a route cannot be served without a rule or a description.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use nebula_core::users::{Access, ObjectKind};
use std::sync::OnceLock;
use utoipa::openapi::OpenApi;

use crate::auth::Rule;
pub use crate::route::Route;
use crate::route::{Out, handler, op, route};
use crate::routes::{self, cron_jobs, device_groups, reports, users};

const fn app(access: Access) -> Rule {
    Rule::Object {
        kind: ObjectKind::App,
        param: "app",
        access,
    }
}

const fn device_group(access: Access) -> Rule {
    Rule::Object {
        kind: ObjectKind::DeviceGroup,
        param: "dg",
        access,
    }
}

const fn cron_job(access: Access) -> Rule {
    Rule::Object {
        kind: ObjectKind::CronJob,
        param: "cron_job",
        access,
    }
}

const AUTH: Rule = Rule::Authenticated;
const ADMIN: Rule = Rule::Admin;
const APP_RO: Rule = app(Access::Ro);
const APP_RW: Rule = app(Access::Rw);
const DG_RO: Rule = device_group(Access::Ro);
const DG_RW: Rule = device_group(Access::Rw);
const CRON_RO: Rule = cron_job(Access::Ro);
const CRON_RW: Rule = cron_job(Access::Rw);
const PRUNING: Rule = Rule::Pruning;

use Out::{Flag, Nothing, Schema as S};

const CONFLICT: (u16, Out) = (409, S("Error"));
const MISSING: (u16, Out) = (400, S("Missing"));
const NOTHING_TO_CHANGE: (u16, Out) = (400, Flag("missing_parameters", true));
const NO_APP: (u16, Out) = (403, Flag("app_exists", false));
const NO_GROUP: (u16, Out) = (403, Flag("device_group_exists", false));
const NO_CRON_JOB: (u16, Out) = (403, Flag("cron_job_exists", false));
const NO_USER: (u16, Out) = (403, Flag("user_exists", false));
const NO_USER_GROUP: (u16, Out) = (403, Flag("user_group_exists", false));
const NOT_A_LIST: [(u16, Out); 2] = [
    (400, Flag("apps_is_list", false)),
    (400, Flag("cron_jobs_is_list", false)),
];
const CRON_INVALID: (u16, Out) = (400, S("CronJobInvalid"));

const APP_WRITE: &[(u16, Out)] = &[NO_APP, CONFLICT];
const APP_RESTART: &[(u16, Out)] = &[
    NO_APP,
    (403, Flag("running_before_restart", false)),
    CONFLICT,
];
const APP_CREATE: &[(u16, Out)] = &[MISSING, (403, Flag("app_exists", true)), CONFLICT];
const APP_UPDATE: &[(u16, Out)] = &[MISSING, NO_APP, CONFLICT];
const APP_PATCH: &[(u16, Out)] = &[NOTHING_TO_CHANGE, NO_APP, CONFLICT];
const DG_CREATE: &[(u16, Out)] = &[
    NOT_A_LIST[0],
    NOT_A_LIST[1],
    (403, Flag("device_group_exists", true)),
    NO_APP,
    NO_CRON_JOB,
    CONFLICT,
];
const DG_UPDATE: &[(u16, Out)] = &[
    NOT_A_LIST[0],
    NOT_A_LIST[1],
    NO_GROUP,
    NO_APP,
    NO_CRON_JOB,
    CONFLICT,
];
const DG_PATCH: &[(u16, Out)] = &[
    NOTHING_TO_CHANGE,
    NOT_A_LIST[0],
    NOT_A_LIST[1],
    NO_GROUP,
    NO_APP,
    NO_CRON_JOB,
    CONFLICT,
];
const CRON_CREATE: &[(u16, Out)] = &[
    MISSING,
    CRON_INVALID,
    (403, Flag("cron_job_exists", true)),
    CONFLICT,
];
const CRON_UPDATE: &[(u16, Out)] = &[MISSING, CRON_INVALID, NO_CRON_JOB, CONFLICT];
const CRON_PATCH: &[(u16, Out)] = &[NOTHING_TO_CHANGE, CRON_INVALID, NO_CRON_JOB, CONFLICT];

const USER_CREATE: &[(u16, Out)] = &[MISSING, (403, Flag("user_exists", true)), CONFLICT];
const USER_PATCH: &[(u16, Out)] = &[NOTHING_TO_CHANGE, (403, Flag("user_name", false)), CONFLICT];
const USER_GROUP_CREATE: &[(u16, Out)] = &[(403, Flag("user_group_exists", true)), CONFLICT];
const USER_GROUP_PATCH: &[(u16, Out)] = &[NOTHING_TO_CHANGE, NO_USER_GROUP, CONFLICT];

const V1_APP: &str = "The app document, including the `command` run.";

/// Every route of the API: method, path, rule, handler; its OpenAPI operation (summary;
/// description; request body, success, other replies).
///
/// v1 routes have the rules of their v2 twins (the original v1 had a single admin); the v1
/// per-app `/prune` needs pruning rights, like every prune. The order is the document's.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    // v1
    route("GET", "/api/status", AUTH, handler!(routes::status),
       op("API status (v1)",
       "`api_available` is \"True\" when the store answers; 503 with \"False\" when it does not.",
       None, (200, Flag("api_available", true)), &[(503, Flag("api_available", false))])),
    route("GET", "/api/apps", AUTH, handler!(routes::list_apps),
       op("List app names (v1)",
       "",
       None, (200, S("AppList")), &[])),
    route("GET", "/api/apps/{app}", APP_RO, handler!(routes::get_app),
       op("Get an app (v1)",
       "",
       None, (200, S("App")), &[NO_APP])),
    route("POST", "/api/apps/{app}", APP_RW, handler!(routes::create_app),
       op("Create an app (v1)",
       "All nine original fields are required (`network_mode` may stand for `networks`). Answers \
        202 with the stored document.",
       Some("AppBodyV1"), (202, S("App")), APP_CREATE)),
    route("DELETE", "/api/apps/{app}", APP_RW, handler!(routes::delete_app),
       op("Delete an app (v1)",
       "",
       None, (202, S("Empty")), APP_WRITE)),
    route("POST", "/api/apps/{app}/stop", APP_RW, handler!(routes::stop),
       op("Stop an app (v1)",
       V1_APP,
       None, (202, S("AppWithCommand")), APP_WRITE)),
    route("POST", "/api/apps/{app}/start", APP_RW, handler!(routes::start),
       op("Start an app (v1)",
       V1_APP,
       None, (202, S("AppWithCommand")), APP_WRITE)),
    route("POST", "/api/apps/{app}/restart", APP_RW, handler!(routes::restart),
       op("Restart an app (v1)",
       "Every container is replaced, the image pulled first. A stopped app answers 403 \
        `{\"running_before_restart\": \"False\"}`.",
       None, (202, S("AppWithCommand")), APP_RESTART)),
    route("POST", "/api/apps/{app}/roll", APP_RW, handler!(routes::roll),
       op("Rolling restart of an app (v1)",
       "As restart, in waves whatever the app's `rolling_restart`.",
       None, (202, S("AppWithCommand")), APP_RESTART)),
    route("POST", "/api/apps/{app}/release", APP_RW, handler!(routes::release),
       op("Release an app (v1, legacy)",
       "A restart without the running check: a stopped app is started.",
       None, (202, S("AppWithCommand")), APP_WRITE)),
    route("POST", "/api/apps/{app}/prune", PRUNING, handler!(routes::prune),
       op("Prune unused images on the app's hosts (v1)",
       "Needs pruning rights.",
       None, (202, S("AppWithCommand")), APP_WRITE)),
    route("POST", "/api/apps/{app}/update", APP_RW, handler!(routes::update_full),
       op("Replace an app's fields (v1)",
       "All nine original fields are required.",
       Some("AppBodyV1"), (202, S("AppWithCommand")), APP_UPDATE)),
    route("PUT", "/api/apps/{app}/update", APP_RW, handler!(routes::update_patch),
       op("Change some of an app's fields (v1)",
       "An empty body answers 400 `{\"missing_parameters\": \"True\"}`.",
       Some("AppPatch"), (202, S("AppWithCommand")), APP_PATCH)),
    route("PATCH", "/api/apps/{app}/update", APP_RW, handler!(routes::update_patch),
       op("Change some of an app's fields (v1)",
       "An empty body answers 400 `{\"missing_parameters\": \"True\"}`.",
       Some("AppPatch"), (202, S("AppWithCommand")), APP_PATCH)),
    // v2: status and apps
    route("GET", "/api/v2/status", AUTH, handler!(routes::status),
       op("API status",
       "`api_available` is true when the store answers; 503 with false when it does not.",
       None, (200, Flag("api_available", true)), &[(503, Flag("api_available", false))])),
    route("GET", "/api/v2/apps", AUTH, handler!(routes::list_apps),
       op("List app names",
       "",
       None, (200, S("AppList")), &[])),
    route("GET", "/api/v2/apps/{app}", APP_RO, handler!(routes::get_app),
       op("Get an app",
       "",
       None, (200, S("App")), &[NO_APP])),
    route("POST", "/api/v2/apps/{app}", APP_RW, handler!(routes::create_app),
       op("Create an app",
       "`docker_image` is required; every other field takes its default. `app_id` is 1.",
       Some("AppBody"), (200, S("App")), APP_CREATE)),
    route("DELETE", "/api/v2/apps/{app}", APP_RW, handler!(routes::delete_app),
       op("Delete an app",
       "The app is also taken out of every device group that lists it.",
       None, (200, S("Empty")), APP_WRITE)),
    route("POST", "/api/v2/apps/{app}/stop", APP_RW, handler!(routes::stop),
       op("Stop an app",
       "`running` becomes false, `app_id` + 1.",
       None, (202, S("App")), APP_WRITE)),
    route("POST", "/api/v2/apps/{app}/start", APP_RW, handler!(routes::start),
       op("Start an app",
       "`running` becomes true, `app_id` + 1.",
       None, (202, S("App")), APP_WRITE)),
    route("POST", "/api/v2/apps/{app}/restart", APP_RW, handler!(routes::restart),
       op("Restart an app",
       "Every container is replaced (in waves when `rolling_restart`). A stopped app answers 403 \
        `{\"running_before_restart\": false}`.",
       None, (202, S("App")), APP_RESTART)),
    route("POST", "/api/v2/apps/{app}/update", APP_RW, handler!(routes::update_full),
       op("Replace an app's fields",
       "`docker_image` is required; fields not given are reset to their defaults.",
       Some("AppBody"), (202, S("App")), APP_UPDATE)),
    route("PUT", "/api/v2/apps/{app}/update", APP_RW, handler!(routes::update_patch),
       op("Change some of an app's fields",
       "Only the fields given change. An empty body answers 400 `{\"missing_parameters\": true}`.",
       Some("AppPatch"), (202, S("App")), APP_PATCH)),
    route("PATCH", "/api/v2/apps/{app}/update", APP_RW, handler!(routes::update_patch),
       op("Change some of an app's fields",
       "Only the fields given change. An empty body answers 400 `{\"missing_parameters\": true}`.",
       Some("AppPatch"), (202, S("App")), APP_PATCH)),
    // v2: device groups and prune
    route("GET", "/api/v2/device_groups", AUTH, handler!(device_groups::list),
       op("List device group names",
       "",
       None, (200, S("DeviceGroupList")), &[])),
    route("GET", "/api/v2/device_groups/{dg}", DG_RO, handler!(device_groups::get_one),
       op("Get a device group",
       "",
       None, (200, S("DeviceGroup")), &[NO_GROUP])),
    route("POST", "/api/v2/device_groups/{dg}", DG_RW, handler!(device_groups::create),
       op("Create a device group",
       "`apps` and `cron_jobs` default to `[]`; every name must be an existing app or cron job \
        (403 `app_exists`/`cron_job_exists` false otherwise).",
       Some("DeviceGroupBody"), (200, S("DeviceGroup")), DG_CREATE)),
    route("DELETE", "/api/v2/device_groups/{dg}", DG_RW, handler!(device_groups::delete),
       op("Delete a device group",
       "",
       None, (200, S("Empty")), &[NO_GROUP, CONFLICT])),
    route("GET", "/api/v2/device_groups/{dg}/info", DG_RO, handler!(device_groups::info),
       op("The whole desired state of a device group",
       "What workers poll: the full app and cron job documents, the name lists and the versions. \
        Cached per group for `CACHE_TIME`; the reply has an `ETag`, and a request whose \
        `If-None-Match` names it gets 304 without a body.",
       None, (200, S("DeviceGroupInfo")), &[(304, Nothing), NO_GROUP])),
    route("POST", "/api/v2/device_groups/{dg}/update", DG_RW, handler!(device_groups::update_full),
       op("Replace a device group's members",
       "`apps` and `cron_jobs` not given become `[]`. `device_group_id` + 1.",
       Some("DeviceGroupBody"), (202, S("DeviceGroup")), DG_UPDATE)),
    route("PUT", "/api/v2/device_groups/{dg}/update", DG_RW, handler!(device_groups::update_patch),
       op("Change a device group's members",
       "Only the lists given change. `device_group_id` + 1.",
       Some("DeviceGroupPatch"), (202, S("DeviceGroup")), DG_PATCH)),
    route("PATCH", "/api/v2/device_groups/{dg}/update", DG_RW, handler!(device_groups::update_patch),
       op("Change a device group's members",
       "Only the lists given change. `device_group_id` + 1.",
       Some("DeviceGroupPatch"), (202, S("DeviceGroup")), DG_PATCH)),
    route("POST", "/api/v2/device_groups/{dg}/prune", PRUNING, handler!(device_groups::prune_one),
       op("Prune unused images on a device group's hosts",
       "`prune_id` + 1. Needs pruning rights.",
       None, (202, S("DeviceGroup")), &[NO_GROUP, CONFLICT])),
    route("POST", "/api/v2/prune", PRUNING, handler!(device_groups::prune_all),
       op("Prune unused images on every device group's hosts",
       "`prune_id` + 1 on every group. Needs pruning rights.",
       None, (202, S("PruneIds")), &[CONFLICT])),
    // v2: cron jobs (delete needs rw like every other write; the original asked admin)
    route("GET", "/api/v2/cron_jobs", AUTH, handler!(cron_jobs::list),
       op("List cron job names",
       "",
       None, (200, S("CronJobList")), &[])),
    route("GET", "/api/v2/cron_jobs/{cron_job}", CRON_RO, handler!(cron_jobs::get_one),
       op("Get a cron job",
       "",
       None, (200, S("CronJob")), &[NO_CRON_JOB])),
    route("POST", "/api/v2/cron_jobs/{cron_job}", CRON_RW, handler!(cron_jobs::create),
       op("Create a cron job",
       "`schedule` (5-field cron, UTC) and `docker_image` are required. A schedule that is not \
        valid answers 400 with `schedule_valid: false`.",
       Some("CronJobBody"), (200, S("CronJob")), CRON_CREATE)),
    route("DELETE", "/api/v2/cron_jobs/{cron_job}", CRON_RW, handler!(cron_jobs::delete),
       op("Delete a cron job",
       "",
       None, (200, S("Empty")), &[NO_CRON_JOB, CONFLICT])),
    route("POST", "/api/v2/cron_jobs/{cron_job}/update", CRON_RW, handler!(cron_jobs::update_full),
       op("Replace a cron job's fields",
       "`schedule` and `docker_image` are required; other fields take their defaults.",
       Some("CronJobBody"), (202, S("CronJob")), CRON_UPDATE)),
    route("PUT", "/api/v2/cron_jobs/{cron_job}/update", CRON_RW, handler!(cron_jobs::update_patch),
       op("Change some of a cron job's fields",
       "Only the fields given change; a schedule given is validated.",
       Some("CronJobPatch"), (202, S("CronJob")), CRON_PATCH)),
    route("PATCH", "/api/v2/cron_jobs/{cron_job}/update", CRON_RW, handler!(cron_jobs::update_patch),
       op("Change some of a cron job's fields",
       "Only the fields given change; a schedule given is validated.",
       Some("CronJobPatch"), (202, S("CronJob")), CRON_PATCH)),
    // v2: users and user groups
    route("GET", "/api/v2/users", AUTH, handler!(users::list_users),
       op("List user names",
       "",
       None, (200, S("UserList")), &[])),
    route("GET", "/api/v2/users/{user}", ADMIN, handler!(users::get_user),
       op("Get a user (hashes only)",
       "Admins only.",
       None, (200, S("User")), &[NO_USER])),
    route("POST", "/api/v2/users/{user}", ADMIN, handler!(users::create_user),
       op("Create a user",
       "Admins only. `password` is required; without `token` a random one is made (shown by \
        `/refresh` only). Both are stored bcrypt-hashed.",
       Some("UserBody"), (200, S("User")), USER_CREATE)),
    route("DELETE", "/api/v2/users/{user}", ADMIN, handler!(users::delete_user),
       op("Delete a user",
       "Admins only.",
       None, (200, S("Empty")), &[NO_USER, CONFLICT])),
    route("PUT", "/api/v2/users/{user}/update", ADMIN, handler!(users::update_user),
       op("Change a user's password and/or token",
       "Admins only. A missing user answers 403 `{\"user_name\": false}`.",
       Some("UserPatch"), (200, S("User")), USER_PATCH)),
    route("PATCH", "/api/v2/users/{user}/update", ADMIN, handler!(users::update_user),
       op("Change a user's password and/or token",
       "Admins only. A missing user answers 403 `{\"user_name\": false}`.",
       Some("UserPatch"), (200, S("User")), USER_PATCH)),
    route("POST", "/api/v2/users/{user}/refresh", ADMIN, handler!(users::refresh_token),
       op("Give a user a new random token",
       "Admins only. The reply is the only time the token is shown in plain.",
       None, (200, S("Token")), &[NO_USER, CONFLICT])),
    route("GET", "/api/v2/user_groups", AUTH, handler!(users::list_groups),
       op("List user group names",
       "",
       None, (200, S("UserGroupList")), &[])),
    route("GET", "/api/v2/user_groups/{user_group}", ADMIN, handler!(users::get_group),
       op("Get a user group",
       "Admins only.",
       None, (200, S("UserGroup")), &[NO_USER_GROUP])),
    route("POST", "/api/v2/user_groups/{user_group}", ADMIN, handler!(users::create_group),
       op("Create a user group",
       "Admins only. Fields not given take their defaults (no members, no rights).",
       Some("UserGroupBody"), (200, S("UserGroup")), USER_GROUP_CREATE)),
    route("DELETE", "/api/v2/user_groups/{user_group}", ADMIN, handler!(users::delete_group),
       op("Delete a user group",
       "Admins only.",
       None, (200, S("Empty")), &[NO_USER_GROUP, CONFLICT])),
    route("PUT", "/api/v2/user_groups/{user_group}/update", ADMIN, handler!(users::update_group),
       op("Change some of a user group's fields",
       "Admins only. Only the fields given change.",
       Some("UserGroupPatch"), (200, S("UserGroup")), USER_GROUP_PATCH)),
    route("PATCH", "/api/v2/user_groups/{user_group}/update", ADMIN, handler!(users::update_group),
       op("Change some of a user group's fields",
       "Admins only. Only the fields given change.",
       Some("UserGroupPatch"), (200, S("UserGroup")), USER_GROUP_PATCH)),
    // v2: reports (workers post them; the list needs authentication only, as the original)
    route("GET", "/api/v2/reports", AUTH, handler!(reports::list),
       op("Page through worker reports",
       "Oldest first. Pass the reply's `last_id.$oid` as `last_id` for the next page; past the \
        end the reply is `{\"data\": null, \"last_id\": null}`. Reports older than the report \
        TTL are never returned. A parameter that cannot be read answers 400 naming it.",
       None, (200, S("ReportPage")), &[])),
    route("POST", "/api/v2/reports", AUTH, handler!(reports::insert),
       op("Store a worker's report",
       "What workers send at check-in.",
       Some("WorkerReport"), (200, S("ReportId")), &[])),
    route("GET", "/api/v2/apps/{app}/status", APP_RO, handler!(reports::app_status),
       op("How the hosts run an app",
       "From the latest unexpired report of each worker: how many hosts hold which `app_id`, and \
        how many match the current version.",
       None, (200, S("AppStatusView")), &[NO_APP])),
    // the OpenAPI document
    route("GET", "/api/openapi.json", AUTH, handler!(serve_openapi),
       op("This document",
       "The same document as `/api/v2/openapi.json`.",
       None, (200, S("OpenApiDocument")), &[])),
    route("GET", "/api/v2/openapi.json", AUTH, handler!(serve_openapi),
       op("This document",
       "",
       None, (200, S("OpenApiDocument")), &[])),
];

/// The rule of a route: `Ok(None)` when the route has rules but none for this method (the
/// router answers 405), `Err(())` when the route is not in the catalogue (not served).
pub(crate) fn rule_of(method: &str, path: &str) -> Result<Option<Rule>, ()> {
    let mut known = false;
    for route in ROUTES.iter().filter(|r| r.path == path) {
        if route.method == method {
            return Ok(Some(route.rule));
        }
        known = true;
    }
    if known { Ok(None) } else { Err(()) }
}

/// The OpenAPI document of every route of [`ROUTES`].
#[must_use]
pub fn document() -> OpenApi {
    crate::openapi::document(ROUTES)
}

/// The document as JSON, built once per process.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"the document did not serialize: {e}\"}}"))
    })
}

/// `GET /api/v2/openapi.json` and `GET /api/openapi.json`.
async fn serve_openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document_json(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_unique_and_names_a_parameter_of_its_route() {
        // Every route has its rule and description by construction (one row each).
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(
                !ROUTES[i + 1..]
                    .iter()
                    .any(|b| a.method == b.method && a.path == b.path),
                "{} {} twice",
                a.method,
                a.path
            );
            if let Rule::Object { param, .. } = a.rule {
                assert!(a.path.contains(&format!("{{{param}}}")), "{}", a.path);
            }
            let _ = a.method_filter();
        }
        assert_eq!(rule_of("GET", "/api/v2/apps/{app}"), Ok(Some(APP_RO)));
        assert_eq!(rule_of("GET", "/api/v2/apps/{app}/stop"), Ok(None));
        assert_eq!(rule_of("GET", "/api/v2/nothing"), Err(()));
    }

    #[test]
    fn every_reference_names_a_component() {
        let doc = serde_json::to_value(document()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(schemas.contains_key(name), "$ref {r} names no schema");
        }
        for op in ROUTES.iter().map(|r| &r.doc) {
            for out in std::iter::once(op.ok.1).chain(op.errors.iter().map(|e| e.1)) {
                if let S(name) = out {
                    assert!(schemas.contains_key(name), "{name}");
                }
            }
            if let Some(body) = op.body {
                assert!(schemas.contains_key(body), "{body}");
            }
        }
    }

    fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref" {
                        out.push(v.as_str().unwrap().to_owned());
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_lists_every_route_with_its_parameters_and_security() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {}", route.method, route.path);
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                params,
                crate::openapi::path_parameters(route.path),
                "{}",
                route.path
            );
            assert!(op["responses"]["401"].is_object());
            assert!(op["responses"]["503"].is_object());
        }
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["basic"]["scheme"], "basic");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(doc["security"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn v1_flags_are_strings_and_v2_flags_booleans() {
        let doc = serde_json::to_value(document()).unwrap();
        let forbidden = |path: &str| {
            doc["paths"][path]["get"]["responses"]["403"]["content"]["application/json"]["schema"]
                ["anyOf"]
                .clone()
        };
        let v1 = forbidden("/api/apps/{app}");
        let v2 = forbidden("/api/v2/apps/{app}");
        assert!(v1.to_string().contains(r#""enum":["False"]"#), "{v1}");
        assert!(v2.to_string().contains(r#""enum":[false]"#), "{v2}");
    }
}

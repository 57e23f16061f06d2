//! The OpenAPI 3.1 document of the whole API, served at `GET /api/v2/openapi.json` (and
//! `GET /api/openapi.json`).
//!
//! It is generated from the code so it cannot drift: its operations are the rows of the route
//! catalogue, [`crate::catalogue::ROUTES`] (the rows the router serves and its gate authorizes
//! every call by), each with its own operation. A test calls every documented operation on the
//! real router, and `nebula-http/tests/openapi.rs` checks real replies of every route against
//! the document's schemas. The component schemas are here.
//!
//! What every operation gets without saying: its path parameters (the object-name pattern),
//! the security schemes (Basic and Bearer), `401`, `503`, `403 {"access_allowed": false}` when
//! its rule is more than authentication, and, when it takes a body, `400` for a body that is
//! not a JSON object and `413` for one over [`crate::MAX_BODY_BYTES`]. v1 routes (`/api/...`)
//! answer flags as the strings `"True"`/`"False"`, v2 routes (`/api/v2/...`) as booleans.

use std::collections::BTreeMap;

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema,
    SchemaType, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Required,
};

use crate::auth::Rule;
use crate::route::{Operation, Out, Route};
use nebula_core::model::PullPolicy;

use Out::{Flag, Nothing, Schema as S};

/// Object names in paths: apps, device groups, cron jobs, users, user groups.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$";

/// The name of each path parameter's object.
fn parameter_description(name: &str) -> &'static str {
    match name {
        "app" => "App name",
        "dg" => "Device group name",
        "cron_job" => "Cron job name",
        "user" => "User name",
        "user_group" => "User group name",
        _ => "Name",
    }
}

/// The query of `GET /api/v2/reports`: (name, schema, description).
fn report_query() -> Vec<(&'static str, RefOr<Schema>, &'static str)> {
    vec![
        (
            "page_size",
            integer(Some(1), Some(nebula_core::report::MAX_PAGE_SIZE as u64)),
            "Most reports returned (default 10).",
        ),
        ("hostname", string(), "Only reports of this hostname."),
        (
            "device_group",
            string(),
            "Only reports of this device group.",
        ),
        (
            "report_creation_time",
            ObjectBuilder::new().schema_type(Type::Integer).into(),
            "Compare `report_creation_time` (unix seconds) with this, by \
             `report_creation_time_filter`.",
        ),
        (
            "report_creation_time_filter",
            enumeration(["eq", "gt", "lt", "gte", "lte", "ne"]),
            "How `report_creation_time` compares (default `eq`).",
        ),
        (
            "updated",
            enumeration(["True", "False", "true", "false"]),
            "Only reports whose `updated` is this.",
        ),
        (
            "last_id",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9A-Fa-f]{24}$"))
                .into(),
            "Only reports after this one (the previous page's `last_id.$oid`).",
        ),
    ]
}

// Schema helpers.

/// Object properties: (name, schema).
type Fields = Vec<(&'static str, RefOr<Schema>)>;

fn reference(name: &str) -> RefOr<Schema> {
    Ref::from_schema_name(name).into()
}

fn string() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).into()
}

fn boolean() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::Boolean).into()
}

fn number() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::Number).into()
}

fn integer(min: Option<u64>, max: Option<u64>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(min)
        .maximum(max)
        .into()
}

/// A number above 0.
fn positive() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .exclusive_minimum(Some(0))
        .into()
}

/// A whole number from 0 (u64 fields).
fn count() -> RefOr<Schema> {
    integer(Some(0), Some(u64::MAX))
}

fn types(types: &[Type]) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(types.iter().cloned().collect::<SchemaType>())
}

fn nullable(t: Type) -> RefOr<Schema> {
    types(&[t, Type::Null]).into()
}

fn enumeration<const N: usize>(values: [&str; N]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

fn list(item: RefOr<Schema>) -> RefOr<Schema> {
    ArrayBuilder::new().items(item).into()
}

fn strings() -> RefOr<Schema> {
    list(string())
}

fn nullable_strings() -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(
            [Type::Array, Type::Null]
                .into_iter()
                .collect::<SchemaType>(),
        )
        .items(string())
        .into()
}

/// An object of any keys to `value`.
fn map(value: RefOr<Schema>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(value)))
}

/// `any_of` with a description.
fn any_of_described(items: impl IntoIterator<Item = RefOr<Schema>>, text: &str) -> RefOr<Schema> {
    items
        .into_iter()
        .fold(AnyOfBuilder::new(), AnyOfBuilder::item)
        .description(Some(text))
        .into()
}

fn any_of(items: impl IntoIterator<Item = RefOr<Schema>>) -> RefOr<Schema> {
    items
        .into_iter()
        .fold(AnyOfBuilder::new(), AnyOfBuilder::item)
        .into()
}

/// An object with exactly these properties (`required` ones always present), no others.
fn closed(
    required: Vec<(&str, RefOr<Schema>)>,
    optional: Vec<(&str, RefOr<Schema>)>,
) -> ObjectBuilder {
    open(required, optional).additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

/// An object with these properties (`required` ones always present), others allowed.
fn open(
    required: Vec<(&str, RefOr<Schema>)>,
    optional: Vec<(&str, RefOr<Schema>)>,
) -> ObjectBuilder {
    let mut b = ObjectBuilder::new().schema_type(Type::Object);
    for (name, schema) in required {
        b = b.property(name, schema).required(name);
    }
    for (name, schema) in optional {
        b = b.property(name, schema);
    }
    b
}

fn described(b: ObjectBuilder, text: &str) -> RefOr<Schema> {
    b.description(Some(text)).into()
}

/// `{"<key>": <flag>}` in a dialect.
fn flag(key: &str, value: bool, v1: bool) -> RefOr<Schema> {
    let flag = if v1 {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([if value { "True" } else { "False" }]))
    } else {
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .enum_values(Some([value]))
    };
    closed(vec![(key, flag.into())], vec![]).into()
}

fn name() -> RefOr<Schema> {
    reference("Name")
}

/// The container fields apps and cron jobs share, as stored (`memory_limit_mb` .. only when
/// set).
fn container_fields_out() -> (Fields, Fields) {
    (
        vec![
            ("docker_image", string()),
            ("env_vars", map(string()).into()),
            ("running", boolean()),
            ("networks", strings()),
            ("volumes", strings()),
            ("devices", strings()),
            ("privileged", boolean()),
        ],
        vec![
            ("memory_limit_mb", integer(Some(1), None)),
            ("cpu_limit", number()),
            ("run_command", strings()),
            ("entrypoint", strings()),
            ("healthcheck", reference("Healthcheck")),
        ],
    )
}

/// `docker_image`: `[registry/]name[:tag][@sha256:digest]`, lower-case name components.
pub const IMAGE_PATTERN: &str = "^([A-Za-z0-9.-]+(:[0-9]{1,5})?/)?[a-z0-9]+([._-][a-z0-9]+)*\
     (/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$";
/// `volumes` entries: `host:container[:mode]`, the host an absolute path or a volume name.
pub const VOLUME_PATTERN: &str = "^(/[^:\\u0000]*|[A-Za-z0-9][A-Za-z0-9_.-]{0,62}):/[^:\\u0000]*\
     (:(ro|rw|z|Z|nocopy|shared|rshared|slave|rslave|private|rprivate|delegated)\
     (,(ro|rw|z|Z|nocopy|shared|rshared|slave|rslave|private|rprivate|delegated))*)?$";
/// `devices` entries: `/host/path[:/container/path[:rwm]]`.
pub const DEVICE_PATTERN: &str = "^/[^:\\u0000]*(:/[^:\\u0000]*(:[rwm]+)?)?$";
/// Environment variable names.
pub const ENV_NAME_PATTERN: &str = "^[A-Za-z_.-][A-Za-z0-9_.-]{0,255}$";

fn patterned(pattern: &str, text: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .max_length(Some(nebula_core::validate::MAX_STRING_LEN))
        .description(Some(text))
        .into()
}

fn bounded_list(item: RefOr<Schema>, max: usize, text: &str) -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(item)
        .max_items(Some(max))
        .description((!text.is_empty()).then_some(text))
        .into()
}

/// The container fields apps and cron jobs share, as a request sets them.
fn container_fields_in() -> Fields {
    let max = nebula_core::validate::MAX_LIST_LEN;
    let env_value = types(&[Type::String, Type::Number, Type::Boolean])
        .max_length(Some(nebula_core::validate::MAX_STRING_LEN));
    vec![
        (
            "docker_image",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(IMAGE_PATTERN))
                .max_length(Some(255))
                .description(Some("`[registry/]name[:tag][@sha256:digest]`."))
                .into(),
        ),
        (
            "env_vars",
            any_of([
                map(env_value.into())
                    .property_names(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(ENV_NAME_PATTERN)),
                    ))
                    .max_properties(Some(max))
                    .description(Some(
                        "Names to values; numbers and booleans are turned into strings.",
                    ))
                    .into(),
                ArrayBuilder::new()
                    .items(string())
                    .max_items(Some(0))
                    .description(Some(
                        "`[]`, as the original's POST update sent: no variables.",
                    ))
                    .into(),
            ]),
        ),
        ("running", boolean()),
        (
            "networks",
            ArrayBuilder::new()
                .items(name())
                .min_items(Some(1))
                .max_items(Some(16))
                .unique_items(true)
                .description(Some(
                    "`[\"host\"]` or `[\"none\"]` alone, or user networks, the first used at \
                     create (default `[\"nebula\", \"bridge\"]`).",
                ))
                .into(),
        ),
        (
            "volumes",
            bounded_list(
                patterned(VOLUME_PATTERN, "`host:container[:mode]`"),
                max,
                "Binds, as `docker run -v`.",
            ),
        ),
        (
            "devices",
            bounded_list(
                patterned(DEVICE_PATTERN, "`/host[:/container[:rwm]]`"),
                max,
                "Devices, as `docker run --device`.",
            ),
        ),
        ("privileged", boolean()),
        (
            "memory_limit_mb",
            types(&[Type::Integer, Type::Null])
                .minimum(Some(1))
                .description(Some("Memory limit per container in MB; null: none."))
                .into(),
        ),
        (
            "cpu_limit",
            types(&[Type::Number, Type::Null])
                .exclusive_minimum(Some(0))
                .maximum(Some(1024))
                .description(Some("CPU limit per container in CPUs; null: none."))
                .into(),
        ),
        ("run_command", nullable_strings()),
        ("entrypoint", nullable_strings()),
        ("healthcheck", healthcheck_in()),
    ]
}

/// `healthcheck` as a request sets it: `{"disable": true}` alone, or parts of a check, whose
/// `test` may be a command string and whose durations may be Docker-style strings; `null`
/// removes the override.
fn healthcheck_in() -> RefOr<Schema> {
    use nebula_core::healthcheck::{MAX_RETRIES, MAX_SECONDS};
    let seconds = |min: u64, text: &str| {
        any_of_described(
            [
                integer(Some(min), Some(u64::from(MAX_SECONDS))),
                patterned(DURATION_PATTERN, "`\"30s\"`, `\"1m30s\"`, `\"1h\"`"),
            ],
            text,
        )
    };
    let check = closed(
        vec![],
        vec![
            (
                "test",
                any_of([
                    described(
                        ObjectBuilder::new().schema_type(Type::String),
                        "A command run by the container's shell (`CMD-SHELL`).",
                    ),
                    ArrayBuilder::new()
                        .items(string())
                        .min_items(Some(2))
                        .max_items(Some(nebula_core::validate::MAX_LIST_LEN + 1))
                        .description(Some(
                            "`[\"CMD\", \"executable\", \"arg\", ...]` or \
                             `[\"CMD-SHELL\", \"command\"]`.",
                        ))
                        .into(),
                ]),
            ),
            ("interval", seconds(1, "Seconds between probes.")),
            (
                "timeout",
                seconds(1, "Seconds a probe may run before it counts as failed."),
            ),
            ("retries", integer(Some(1), Some(u64::from(MAX_RETRIES)))),
            (
                "start_period",
                seconds(0, "Seconds after start during which failures do not count."),
            ),
        ],
    )
    .min_properties(Some(1));
    any_of_described(
        [
            reference("HealthcheckDisabled"),
            described(
                check,
                "Parts that replace the image's HEALTHCHECK; a part left out keeps the image's \
                 value, or Docker's default (interval 30 s, timeout 30 s, retries 3).",
            ),
            ObjectBuilder::new().schema_type(Type::Null).into(),
        ],
        "Overrides the image's HEALTHCHECK; `null` or absent: the image's. Used by the \
         rolling-restart health gate.",
    )
}

/// `healthcheck` durations as strings: `<n>h`, `<n>m`, `<n>s` parts.
pub const DURATION_PATTERN: &str = "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$";

/// The stored `healthcheck`: `{"disable": true}`, or the parts set, `test` as Docker's list
/// and durations in seconds.
fn healthcheck_out() -> RefOr<Schema> {
    let seconds = || {
        integer(
            Some(0),
            Some(u64::from(nebula_core::healthcheck::MAX_SECONDS)),
        )
    };
    any_of([
        reference("HealthcheckDisabled"),
        closed(
            vec![],
            vec![
                (
                    "test",
                    ArrayBuilder::new()
                        .items(string())
                        .min_items(Some(2))
                        .into(),
                ),
                ("interval", seconds()),
                ("timeout", seconds()),
                ("retries", integer(Some(1), None)),
                ("start_period", seconds()),
            ],
        )
        .min_properties(Some(1))
        .into(),
    ])
}

fn app_out(with_command: bool) -> RefOr<Schema> {
    let (mut required, optional) = container_fields_out();
    required.extend([
        ("app_name", name()),
        ("app_id", count()),
        ("incarnation", count()),
        ("restart_generation", count()),
        ("restart_mode", enumeration(["as_configured", "rolling"])),
        ("prune_generation", count()),
        ("starting_ports", list(reference("StartingPort"))),
        ("containers_per", reference("ContainersPer")),
        ("rolling_restart", boolean()),
        ("rollout", reference("Rollout")),
        ("pull_policy", pull_policy()),
    ]);
    if with_command {
        required.push((
            "command",
            enumeration([
                "stop", "start", "restart", "roll", "release", "prune", "update",
            ]),
        ));
    }
    closed(required, optional).into()
}

fn pull_policy() -> RefOr<Schema> {
    described(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(PullPolicy::NAMES)),
        "When the worker pulls the image: `always` (default: a change or a restart pulls \
         first; the local image is used when the pull fails), `if_missing`, `never`.",
    )
}

fn app_in() -> Fields {
    let mut fields = container_fields_in();
    fields.extend([
        (
            "starting_ports",
            list(any_of([
                integer(Some(1), Some(65535)),
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .min_properties(Some(1))
                    .max_properties(Some(1))
                    .additional_properties(Some(AdditionalProperties::RefOr(
                        types(&[Type::Integer, Type::String]).into(),
                    )))
                    .description(Some("`{\"<host port>\": \"<container port>\"}`"))
                    .into(),
            ])),
        ),
        (
            "containers_per",
            described(
                closed(
                    vec![],
                    vec![
                        ("cpu", positive()),
                        ("server", integer(Some(1), Some(1024))),
                        ("instance", integer(Some(1), Some(1024))),
                        ("memory", positive()),
                        ("mem", positive()),
                    ],
                )
                .min_properties(Some(1))
                .max_properties(Some(1)),
                "Exactly one rule: `cpu` (per CPU), `server`/`instance` (per host), \
                 `memory`/`mem` (MB per container).",
            ),
        ),
        (
            "network_mode",
            described(
                ObjectBuilder::new().schema_type(Type::String),
                "Legacy (v0.7 to 1.0): one network, instead of `networks`.",
            ),
        ),
        ("rolling_restart", boolean()),
        ("pull_policy", pull_policy()),
        (
            "rollout",
            closed(
                vec![],
                vec![
                    ("wave_size", integer(Some(0), Some(u64::from(u32::MAX)))),
                    (
                        "min_healthy_seconds",
                        integer(Some(0), Some(u64::from(u32::MAX))),
                    ),
                ],
            )
            .into(),
        ),
    ]);
    fields
}

fn cron_job_out() -> RefOr<Schema> {
    let (mut required, optional) = container_fields_out();
    required.extend([
        ("cron_job_name", name()),
        ("cron_job_id", count()),
        ("incarnation", count()),
        ("schedule", string()),
    ]);
    closed(required, optional).into()
}

fn cron_job_in() -> Fields {
    let mut fields = container_fields_in();
    fields.push((
        "schedule",
        described(
            ObjectBuilder::new().schema_type(Type::String),
            "5-field cron, UTC, such as `*/5 * * * *`.",
        ),
    ));
    fields
}

/// A body schema: `fields`, of which `required`; `patch` bodies need at least one field.
fn body(fields: Fields, required: &[&str], patch: bool, text: &str) -> RefOr<Schema> {
    let (req, opt): (Vec<_>, Vec<_>) = fields.into_iter().partition(|(k, _)| required.contains(k));
    let mut b = closed(req, opt).description(Some(text));
    if patch {
        b = b.min_properties(Some(1));
    }
    b.into()
}

const ECHOED: &str =
    " Fields of the stored document (its name, versions) may be echoed back and are ignored.";

fn grants() -> RefOr<Schema> {
    map(enumeration(["ro", "rw"])).into()
}

fn user_group_in() -> Fields {
    vec![
        ("group_members", list(name())),
        ("pruning_allowed", boolean()),
        ("admin", boolean()),
        ("apps", grants()),
        ("device_groups", grants()),
        ("cron_jobs", grants()),
    ]
}

fn secret() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(crate::auth::MAX_SECRET_BYTES))
        .description(Some(format!(
            "At most {} bytes.",
            crate::auth::MAX_SECRET_BYTES
        )))
        .into()
}

fn container_report() -> RefOr<Schema> {
    open(
        vec![
            ("name", string()),
            ("id", string()),
            ("state", string()),
            ("health", string()),
        ],
        vec![
            ("image", nullable(Type::String)),
            ("app_name", string()),
            ("app_id", count()),
            ("cron_job_name", string()),
            ("created", count()),
        ],
    )
    .into()
}

/// The worker report's fields: (required, optional) as the manager reads them.
fn report_fields() -> (Fields, Fields) {
    let u32_max = Some(u64::from(u32::MAX));
    let memory = open(
        ["total", "used", "free", "available"]
            .into_iter()
            .map(|k| (k, count()))
            .collect(),
        vec![],
    )
    .schema_type(
        [Type::Object, Type::Null]
            .into_iter()
            .collect::<SchemaType>(),
    );
    let disk = open(
        ["total", "used", "free"]
            .into_iter()
            .map(|k| (k, count()))
            .collect(),
        vec![],
    )
    .schema_type(
        [Type::Object, Type::Null]
            .into_iter()
            .collect::<SchemaType>(),
    );
    let held = open(
        vec![
            ("app_id", count()),
            ("incarnation", count()),
            ("running", boolean()),
        ],
        vec![],
    );
    let config = open(
        vec![],
        vec![
            ("apps", map(held.into()).into()),
            ("apps_list", strings()),
            ("device_group_id", nullable(Type::Integer)),
            ("prune_id", nullable(Type::Integer)),
            ("incarnation", nullable(Type::Integer)),
        ],
    );
    let status = open(
        vec![
            ("app_id", count()),
            ("incarnation", count()),
            ("running", boolean()),
            ("desired_containers", integer(Some(0), u32_max)),
            ("running_containers", integer(Some(0), u32_max)),
            ("converged", boolean()),
        ],
        vec![(
            "pull_fallback",
            described(
                closed(
                    vec![
                        ("image", string()),
                        ("image_id", string()),
                        ("failure", enumeration(["unreachable", "refused"])),
                        (
                            "error",
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .max_length(Some(nebula_core::report::MAX_PULL_ERROR_LEN))
                                .into(),
                        ),
                        ("app_id", count()),
                        ("at", count()),
                    ],
                    vec![],
                ),
                "The host runs this version from the image it already held: the pull failed.",
            ),
        )],
    );
    (
        vec![
            ("report_creation_time", count()),
            (
                "hostname",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("\\S"))
                    .max_length(Some(nebula_core::report::MAX_HOSTNAME_LEN))
                    .description(Some("Not blank."))
                    .into(),
            ),
        ],
        vec![
            ("memory_usage", memory.into()),
            ("root_disk_usage", disk.into()),
            (
                "cpu_usage",
                open(
                    vec![("cores", integer(Some(0), u32_max))],
                    vec![("used_percent", nullable(Type::Number))],
                )
                .into(),
            ),
            (
                "apps_containers",
                bounded_list(container_report(), nebula_core::report::MAX_CONTAINERS, ""),
            ),
            (
                "cron_jobs_containers",
                bounded_list(container_report(), nebula_core::report::MAX_CONTAINERS, ""),
            ),
            ("current_device_group_config", config.into()),
            (
                "device_group",
                types(&[Type::String, Type::Null])
                    .min_length(Some(1))
                    .into(),
            ),
            ("app_names", nullable_strings()),
            ("updated", boolean()),
            ("apps_status", map(status.into()).into()),
        ],
    )
}

fn oid() -> RefOr<Schema> {
    closed(
        vec![(
            "$oid",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9a-f]{24}$"))
                .into(),
        )],
        vec![],
    )
    .into()
}

fn stored_report() -> RefOr<Schema> {
    let (mut required, optional) = report_fields();
    // As stored and returned, every field but `app_names` is present.
    let (present, optional): (Vec<_>, Vec<_>) =
        optional.into_iter().partition(|(k, _)| *k != "app_names");
    required.extend(present);
    required.push(("_id", oid()));
    required.push((
        "report_insert_date",
        closed(vec![("$date", count())], vec![]).into(),
    ));
    open(required, optional).into()
}

/// Every component schema.
fn schemas() -> Fields {
    let names = |key: &str, what: &str| -> RefOr<Schema> {
        described(closed(vec![(key, list(name()))], vec![]), what)
    };
    vec![
        (
            "Name",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NAME_PATTERN))
                .into(),
        ),
        // Documents.
        (
            "StartingPort",
            any_of([
                integer(Some(1), Some(65535)),
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .min_properties(Some(1))
                    .max_properties(Some(1))
                    .additional_properties(Some(AdditionalProperties::RefOr(string())))
                    .description(Some("`{\"<host port>\": \"<container port>\"}`"))
                    .into(),
            ]),
        ),
        (
            "ContainersPer",
            closed(
                vec![],
                vec![
                    ("cpu", number()),
                    ("server", integer(Some(1), None)),
                    ("instance", integer(Some(1), None)),
                    ("memory", number()),
                    ("mem", number()),
                ],
            )
            .min_properties(Some(1))
            .max_properties(Some(1))
            .into(),
        ),
        (
            "Rollout",
            closed(
                vec![("wave_size", count()), ("min_healthy_seconds", count())],
                vec![],
            )
            .into(),
        ),
        (
            "HealthcheckDisabled",
            described(
                closed(
                    vec![(
                        "disable",
                        ObjectBuilder::new()
                            .schema_type(Type::Boolean)
                            .enum_values(Some([true]))
                            .into(),
                    )],
                    vec![],
                ),
                "No healthcheck, even if the image declares one.",
            ),
        ),
        ("Healthcheck", healthcheck_out()),
        ("App", app_out(false)),
        ("AppWithCommand", app_out(true)),
        ("AppList", names("apps", "App names.")),
        (
            "DeviceGroup",
            closed(
                vec![
                    ("device_group", name()),
                    ("apps", list(name())),
                    ("cron_jobs", list(name())),
                    ("device_group_id", count()),
                    ("prune_id", count()),
                    ("incarnation", count()),
                ],
                vec![],
            )
            .into(),
        ),
        (
            "DeviceGroupList",
            names("device_groups", "Device group names."),
        ),
        (
            "DeviceGroupInfo",
            closed(
                vec![
                    ("apps", list(reference("App"))),
                    ("apps_list", list(name())),
                    ("cron_jobs", list(reference("CronJob"))),
                    ("cron_jobs_list", list(name())),
                    ("prune_id", count()),
                    ("device_group_id", count()),
                    ("incarnation", count()),
                ],
                vec![],
            )
            .into(),
        ),
        (
            "PruneIds",
            closed(vec![("prune_ids", map(count()).into())], vec![]).into(),
        ),
        ("CronJob", cron_job_out()),
        ("CronJobList", names("cron_jobs", "Cron job names.")),
        (
            "User",
            described(
                closed(
                    vec![
                        ("user_name", name()),
                        ("password", string()),
                        ("token", string()),
                    ],
                    vec![],
                ),
                "`password` and `token` are bcrypt hashes.",
            ),
        ),
        ("UserList", names("users", "User names.")),
        (
            "Token",
            described(
                closed(vec![("token", string())], vec![]),
                "The new token, in plain.",
            ),
        ),
        (
            "UserGroup",
            closed(
                vec![
                    ("user_group", name()),
                    ("group_members", list(name())),
                    ("pruning_allowed", boolean()),
                    ("admin", boolean()),
                    ("apps", grants()),
                    ("device_groups", grants()),
                    ("cron_jobs", grants()),
                ],
                vec![],
            )
            .into(),
        ),
        ("UserGroupList", names("user_groups", "User group names.")),
        (
            "ReportPage",
            any_of([
                closed(
                    vec![
                        ("data", list(reference("StoredReport"))),
                        ("last_id", oid()),
                    ],
                    vec![],
                )
                .into(),
                described(
                    closed(
                        vec![
                            ("data", nullable(Type::Null)),
                            ("last_id", nullable(Type::Null)),
                        ],
                        vec![],
                    ),
                    "Past the end of the data.",
                ),
            ]),
        ),
        ("StoredReport", stored_report()),
        ("ReportId", closed(vec![("_id", oid())], vec![]).into()),
        (
            "AppStatusView",
            closed(
                vec![
                    ("app_name", name()),
                    ("app_id", count()),
                    ("hosts", count()),
                    ("by_app_id", map(count()).into()),
                    ("converged", count()),
                    ("reports_considered_since", count()),
                ],
                vec![],
            )
            .into(),
        ),
        (
            "Empty",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .max_properties(Some(0))
                .into(),
        ),
        (
            "OpenApiDocument",
            open(
                vec![
                    ("openapi", string()),
                    ("info", ObjectBuilder::new().into()),
                    ("paths", ObjectBuilder::new().into()),
                ],
                vec![],
            )
            .into(),
        ),
        // Request bodies.
        ("AppBodyV1", {
            let mut b = ObjectBuilder::new().schema_type(Type::Object);
            for (k, v) in app_in() {
                b = b.property(k, v);
            }
            // `networks` or `network_mode`: below.
            for k in crate::dto::V1_REQUIRED.iter().filter(|k| **k != "networks") {
                b = b.required(*k);
            }
            let required = |k: &str| -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .required(k)
                    .into()
            };
            let b: RefOr<Schema> = b
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
                .description(Some(
                    "The nine original fields, all required (`network_mode` may stand \
                         for `networks`).",
                ))
                .into();
            all_of(b, any_of([required("networks"), required("network_mode")]))
        }),
        (
            "AppBody",
            body(
                app_in(),
                &["docker_image"],
                false,
                &format!("`docker_image` is required; the rest take their defaults.{ECHOED}"),
            ),
        ),
        (
            "AppPatch",
            body(
                app_in(),
                &[],
                true,
                &format!("The fields to change.{ECHOED}"),
            ),
        ),
        (
            "DeviceGroupBody",
            body(
                vec![("apps", list(string())), ("cron_jobs", list(string()))],
                &[],
                false,
                &format!("App and cron job names; each must exist.{ECHOED}"),
            ),
        ),
        (
            "DeviceGroupPatch",
            body(
                vec![("apps", list(string())), ("cron_jobs", list(string()))],
                &[],
                true,
                &format!("The lists to change.{ECHOED}"),
            ),
        ),
        (
            "CronJobBody",
            body(
                cron_job_in(),
                &["docker_image", "schedule"],
                false,
                &format!("`docker_image` and `schedule` are required.{ECHOED}"),
            ),
        ),
        (
            "CronJobPatch",
            body(
                cron_job_in(),
                &[],
                true,
                &format!("The fields to change.{ECHOED}"),
            ),
        ),
        (
            "UserBody",
            body(
                vec![("password", secret()), ("token", secret())],
                &["password"],
                false,
                "Without `token`, a random one is made.",
            ),
        ),
        (
            "UserPatch",
            body(
                vec![("password", secret()), ("token", secret())],
                &[],
                true,
                "The secrets to change.",
            ),
        ),
        (
            "UserGroupBody",
            body(
                user_group_in(),
                &[],
                false,
                "Fields not given take their defaults: no members, no rights.",
            ),
        ),
        (
            "UserGroupPatch",
            body(user_group_in(), &[], true, "The fields to change."),
        ),
        ("WorkerReport", {
            let (required, optional) = report_fields();
            open(required, optional)
                .description(Some("What a worker reports at check-in."))
                .into()
        }),
        // Errors.
        ("Error", closed(vec![("error", string())], vec![]).into()),
        (
            "Invalid",
            described(
                open(vec![("errors", list(reference("FieldError")))], vec![])
                    .additional_properties(Some(AdditionalProperties::RefOr(string()))),
                "Each broken rule: `\"<field>\": \"<rule>\"` (the first per field), and all of \
                 them in `errors`.",
            ),
        ),
        (
            "CronJobInvalid",
            described(
                open(
                    vec![("errors", list(reference("FieldError")))],
                    vec![(
                        "schedule_valid",
                        types(&[Type::Boolean, Type::String]).into(),
                    )],
                )
                .additional_properties(Some(AdditionalProperties::RefOr(string()))),
                "As `Invalid`, with `\"schedule_valid\": false` when the schedule is not valid.",
            ),
        ),
        (
            "FieldError",
            closed(vec![("field", string()), ("rule", string())], vec![]).into(),
        ),
        (
            "Missing",
            described(
                closed(
                    vec![(
                        "missing_parameters",
                        ArrayBuilder::new()
                            .items(string())
                            .min_items(Some(1))
                            .into(),
                    )],
                    vec![],
                ),
                "The required fields that are absent.",
            ),
        ),
    ]
}

/// Both schemas.
fn all_of(a: RefOr<Schema>, b: RefOr<Schema>) -> RefOr<Schema> {
    AllOfBuilder::new().item(a).item(b).into()
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        202 => "Accepted",
        304 => "Not modified: the `If-None-Match` ETag is current",
        400 => "Bad request",
        401 => "No or wrong credentials",
        403 => "Forbidden, or the object exists (or not) against the request",
        409 => "Too many concurrent changes; retry",
        413 => "Body too large",
        503 => "The store is unavailable; retry",
        _ => "Reply",
    }
}

fn method_of(method: &str) -> Option<HttpMethod> {
    Some(match method {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        "HEAD" => HttpMethod::Head,
        "OPTIONS" => HttpMethod::Options,
        _ => return None,
    })
}

/// The path parameters of a route template, in order.
pub(crate) fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn tag_of(path: &str) -> String {
    let v2 = path.strip_prefix("/api/v2/");
    let rest = v2.or_else(|| path.strip_prefix("/api/")).unwrap_or(path);
    let first = rest.split('/').next().unwrap_or(rest);
    let group = match first {
        "prune" => "device_groups",
        "status" | "openapi.json" => "api",
        "apps" if rest.ends_with("/status") => "reports",
        other => other,
    };
    if v2.is_some() {
        group.to_owned()
    } else {
        format!("v1 {group}")
    }
}

/// The schemas of all the replies of one operation, by status.
fn replies(route: &Route) -> BTreeMap<u16, Vec<Out>> {
    let (rule, op) = (route.rule, &route.doc);
    let mut by_code: BTreeMap<u16, Vec<Out>> = BTreeMap::new();
    let mut add = |code: u16, out: Out| {
        let outs = by_code.entry(code).or_default();
        if !outs.contains(&out) {
            outs.push(out);
        }
    };
    add(op.ok.0, op.ok.1);
    let takes_input = op.body.is_some()
        || !path_parameters(route.path).is_empty()
        || route.path == "/api/v2/reports";
    if takes_input {
        add(400, S("Invalid"));
    }
    for &(code, out) in op.errors {
        add(code, out);
    }
    add(401, S("Error"));
    if rule != Rule::Authenticated {
        add(403, Flag("access_allowed", false));
    }
    if op.body.is_some() {
        add(413, S("Error"));
    }
    add(503, S("Error"));
    by_code
}

fn out_schema(out: Out, v1: bool) -> Option<RefOr<Schema>> {
    match out {
        S(name) => Some(reference(name)),
        Flag(key, value) => Some(flag(key, value, v1)),
        Nothing => None,
    }
}

fn build_operation(route: &Route) -> utoipa::openapi::path::Operation {
    let op: &Operation = &route.doc;
    let v1 = route.is_v1();
    let mut b = OperationBuilder::new()
        .summary(Some(op.summary))
        .description((!op.description.is_empty()).then_some(op.description))
        .operation_id(Some(operation_id(route.method, route.path)))
        .tag(tag_of(route.path));
    for param in path_parameters(route.path) {
        b = b.parameter(
            ParameterBuilder::new()
                .name(param)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(parameter_description(param)))
                .schema(Some(name())),
        );
    }
    if route.path == "/api/v2/reports" && route.method == "GET" {
        for (param, schema, text) in report_query() {
            b = b.parameter(
                ParameterBuilder::new()
                    .name(param)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(text))
                    .schema(Some(schema)),
            );
        }
    }
    if route.path.ends_with("/info") {
        b = b.parameter(
            ParameterBuilder::new()
                .name("If-None-Match")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some("The ETag of the reply the worker holds."))
                .schema(Some(string())),
        );
    }
    if let Some(body) = op.body {
        b = b.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(reference(body))).build(),
                )
                .build(),
        ));
    }
    let mut responses = ResponsesBuilder::new();
    for (code, outs) in replies(route) {
        let mut r = ResponseBuilder::new().description(status_text(code));
        let schemas: Vec<RefOr<Schema>> = outs.iter().filter_map(|o| out_schema(*o, v1)).collect();
        let schema = match schemas.len() {
            0 => None,
            1 => schemas.into_iter().next(),
            _ => Some(any_of(schemas)),
        };
        if let Some(schema) = schema {
            r = r.content(
                "application/json",
                ContentBuilder::new().schema(Some(schema)).build(),
            );
        }
        if code == 401 {
            r = r.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(Some(string()))
                    .description(Some("`Basic realm=\"nebula\"`"))
                    .build(),
            );
        }
        if route.path.ends_with("/info") && matches!(code, 200 | 304) {
            r = r.header(
                "ETag",
                HeaderBuilder::new()
                    .schema(Some(string()))
                    .description(Some("Changes whenever the group's desired state does."))
                    .build(),
            );
        }
        responses = responses.response(code.to_string(), r.build());
    }
    b.responses(responses.build()).build()
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.extend(
            part.chars()
                .filter(|c| !matches!(c, '{' | '}'))
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

/// The OpenAPI document of `routes` (the catalogue, [`crate::catalogue::ROUTES`]).
pub(crate) fn document(routes: &[Route]) -> OpenApi {
    let mut paths = Paths::new();
    let mut tags: Vec<String> = Vec::new();
    for route in routes {
        let Some(method) = method_of(route.method) else {
            continue;
        };
        let tag = tag_of(route.path);
        if !tags.contains(&tag) {
            tags.push(tag);
        }
        paths.add_path_operation(route.path, vec![method], build_operation(route));
    }
    let mut components = ComponentsBuilder::new()
        .security_scheme(
            "basic",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The local admin (`BASIC_AUTH_USER`/`BASIC_AUTH_PASSWORD`) or a user's \
                         name and password.",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The local admin's `AUTH_TOKEN` or a user's token."))
                    .build(),
            ),
        );
    for (name, schema) in schemas() {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Nebula API manager")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Nebula's REST API: v1 under `/api` (flags as \"True\"/\"False\"), v2 under \
                     `/api/v2` (flags as booleans). Every route needs authentication (401 \
                     without it); a caller without the rights a route needs gets 403 \
                     `{\"access_allowed\": false}`.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .security(Some([
            SecurityRequirement::new("basic", Vec::<String>::new()),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]))
        .tags(Some(
            tags.into_iter().map(|t| TagBuilder::new().name(t).build()),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_automata::meta::Regex;

    /// The document's patterns restate nebula-core's rules: they agree on every sample.
    #[test]
    fn the_patterns_agree_with_nebula_core_validation() {
        let image = Regex::new(IMAGE_PATTERN).unwrap();
        for sample in [
            "nginx",
            "nginx:1.27",
            "library/nginx:latest",
            "registry.example.com:5000/team/app:v1.2",
            "localhost:5000/app",
            "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "app:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a.b-c_d/e__f",
            "",
            "Nginx",
            "nginx:",
            ":tag",
            "nginx:bad tag",
            "app@sha256:short",
            "/app",
            "app/",
            "app--",
            "-app",
        ] {
            assert_eq!(
                image.is_match(sample),
                nebula_core::validate::docker_image(sample).is_ok(),
                "docker_image {sample:?}"
            );
        }
        let volume = Regex::new(VOLUME_PATTERN).unwrap();
        for sample in [
            "/data:/data",
            "/data:/data:ro",
            "/data:/data:ro,z",
            "named:/var/lib/x",
            "named:/var/lib/x:rw,nocopy",
            "/:/host",
            "data",
            "/data",
            "relative/path:/data",
            "/data:relative",
            "/data:/data:bogus",
            "/data:/data:ro,",
            "-named:/x",
            ":/x",
        ] {
            assert_eq!(
                volume.is_match(sample),
                nebula_core::validate::volume(sample).is_ok(),
                "volume {sample:?}"
            );
        }
    }
}

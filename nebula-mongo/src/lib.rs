//! Nebula's [`Store`] on MongoDB, through the official `mongodb` driver.
//!
//! [`MongoStore::connect`] takes a [`MongoConfig`] (the original's `mongo_url`, `schema_name`,
//! `mongo_max_pool_size` and `mongo_report_ttl`; this crate never reads the environment) and
//! keeps every [`Collection`] in the database `schema_name`, in the original's collections:
//! `nebula_apps`, `nebula_device_groups`, `nebula_cron_jobs`, `nebula_users`,
//! `nebula_user_groups` and `nebula_reports` ([`Collection::name`]), plus
//! `nebula_publish_marks` (what the managers last published, for their outbox).
//!
//! # Document layout
//!
//! Each stored document is one MongoDB document:
//!
//! ```text
//! {
//!   _id:       "<key>",              // the Store key (app name, group name, report id, ...)
//!   _rev:      NumberLong(<rev>),    // the Store revision: 1 on create, +1 per write
//!   _write_id: ObjectId(...),        // unique per put call: tells a retried write it landed
//!   doc:       { ... },              // the JSON document, converted to BSON as it is
//!   report_insert_date: ISODate(..)  // nebula_reports only: time of the last write (TTL)
//! }
//! ```
//!
//! The JSON document lives under `doc`, so none of its fields can collide with `_id` or
//! `_rev`, and it is converted exactly: integers become Int64, integers above `i64::MAX`
//! (which BSON has no integer type for) become Decimal128 with exponent 0, other numbers
//! Double; objects that look like extended JSON (`{"$oid": ..}`, or a report's
//! `{"$date": <ms>}`) stay plain objects, because documents are read as raw BSON (the driver's
//! `Document` would turn them into an ObjectId or a date). So an app's `incarnation` (a `u64`
//! of nanoseconds) reads back exactly, whatever its size.
//!
//! The key is `_id`, so MongoDB's mandatory unique `_id` index is the unique index on the key
//! (the original's unique index on `app_name`, `device_group`, ...), and `list` is sorted by
//! it. `nebula_reports` also gets a TTL index, `report_insert_date_1`, with
//! `expireAfterSeconds = report_ttl`: MongoDB deletes a report `report_ttl` after its last
//! write, sweeping about once a minute, so an expired report may still be listed for up to a
//! minute. Reopening with another `report_ttl` changes the index (`collMod`).
//!
//! This layout is not the original's (flat documents with an ObjectId `_id`): this store does
//! not read a database written by the Python Nebula; point it at another `schema_name`.
//!
//! # Compare-and-swap
//!
//! - `put` with [`Expect::Absent`] inserts; a duplicate-key error is a
//!   [`StoreError::Conflict`] with the revision found.
//! - `put` with [`Expect::Rev`]`(r)` replaces the document matching `{_id: key, _rev: r}` with
//!   revision `r + 1`; when nothing matched it reads the current revision for the `Conflict`.
//! - `delete` deletes the document matching `{_id: key, _rev: r}`, likewise.
//!
//! Each is one single-document write, which MongoDB applies atomically, so two API managers
//! on one database never lose each other's updates. Writes use write concern `majority` with
//! `j: true` unless the URL sets `w`/`journal`, so an acknowledged write is on disk.
//!
//! # Failures
//!
//! Transient errors (network errors, a cleared pool, and the errors MongoDB labels or codes as
//! retryable, e.g. a primary stepping down) are retried up to [`ATTEMPTS`] times in all with
//! exponential backoff (50 ms, 200 ms, 800 ms), on top of the driver's own single retry; then,
//! like every other failure to reach the server, they are [`StoreError::Unavailable`]. Server
//! selection waits up to `server_selection_timeout` (default 10 s) and is not repeated. A
//! write retried after an ambiguous failure (one that may have been applied) recognises its
//! own earlier success by `_write_id` instead of reporting a conflict with itself; a delete
//! retried that way and finding the document gone reports success. Documents that cannot be
//! decoded are [`StoreError::Corrupt`].
//!
//! # Which server the tests ran against
//!
//! The tests in `nebula-mongo/tests` (the Store contract suite, an app and a report
//! round-tripped with every field, index creation on reopen, two stores racing on one
//! counter, TTL expiry, retries of injected errors) run in CI against **secantusdb** 0.7
//! (a MongoDB-wire-compatible server on WiredTiger from PyPI, which answers as MongoDB 8.2 in
//! single-node replica-set mode; `.ci/mongo.sh` installs it in a venv and starts it on
//! 127.0.0.1:27017), not against a real `mongod`, which these machines do not have. Every
//! operation this crate uses works there as on MongoDB, including the TTL monitor and the
//! `failCommand` fail point the retry test injects errors with. Set `NEBULA_TEST_MONGODB_URL`
//! (e.g. `mongodb://127.0.0.1:27017`) to run the same tests against a real MongoDB (the retry
//! test needs `enableTestCommands=1` there, or it prints `SKIPPED`). Without a server the
//! tests print `SKIPPED` and pass, unless `NEBULA_REQUIRE_MONGO=1` (as `.ci/run` sets).

mod codec;

use std::fmt;
use std::future::{Future, IntoFuture};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{
    Bson, DateTime, Document, RawBsonRef, RawDocument, RawDocumentBuf, doc, oid::ObjectId,
};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{
    Acknowledgment, ClientOptions, ConnectionString, IndexOptions, WriteConcern,
};
use mongodb::{Client, Database, IndexModel};
use nebula_core::backoff::Backoff;
use nebula_core::store::{Collection, Expect, Store, StoreError, Stored};

/// The default database (`schema_name`), as the original.
pub const DEFAULT_SCHEMA_NAME: &str = "nebula";
/// The default connection pool size (`mongo_max_pool_size`), as the original.
pub const DEFAULT_MAX_POOL_SIZE: u32 = 25;
/// How long a report lives after its last write (`mongo_report_ttl`), as the original.
pub const DEFAULT_REPORT_TTL: Duration = Duration::from_secs(3600);
/// How long an operation waits for a usable server before it is `Unavailable`.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a transient failure is tried in all (the driver may retry once inside each).
pub const ATTEMPTS: u32 = 4;

/// The field holding the key.
pub const FIELD_KEY: &str = "_id";
/// The field holding the revision (Int64).
pub const FIELD_REV: &str = "_rev";
/// The field holding the id of the write that stored this version (ObjectId).
pub const FIELD_WRITE_ID: &str = "_write_id";
/// The field holding the JSON document.
pub const FIELD_DOC: &str = "doc";
/// The date field of `nebula_reports` the TTL index expires on (the original's name).
pub const FIELD_REPORT_DATE: &str = "report_insert_date";
/// The name of the TTL index on `nebula_reports`.
pub const REPORT_TTL_INDEX: &str = "report_insert_date_1";

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How often a write re-tries when the document changes under it in a way that allows no
/// answer yet (deleted between a failed insert and the read, re-created at the same revision).
const CAS_ROUNDS: u32 = 8;
/// Server error codes that mean "try again": MongoDB's retryable read codes.
const RETRYABLE_CODES: [i32; 13] = [
    6, 7, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];
const DUPLICATE_KEY: i32 = 11000;
const INDEX_OPTIONS_CONFLICT: [i32; 2] = [85, 86];
const NAMESPACE_EXISTS: i32 = 48;

/// How to reach MongoDB. Libraries take this; `bin/` fills it from flags, environment
/// (`MONGO_URL`, `SCHEMA_NAME`, `MONGO_MAX_POOL_SIZE`, `MONGO_REPORT_TTL`) and files.
///
/// Options set in the URL itself (`maxPoolSize`, `serverSelectionTimeoutMS`, `w`, `journal`,
/// `appName`) win over the fields here; a database path in the URL only selects where
/// credentials are checked (`authSource`), the data always lives in `schema_name`.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoConfig {
    /// `mongodb://[user:password@]host[:port][,host...][/authdb][?options]` or `mongodb+srv://`.
    pub mongo_url: String,
    /// The database (`schema_name`).
    pub schema_name: String,
    /// The most connections the pool opens (`mongo_max_pool_size`).
    pub max_pool_size: u32,
    /// How long a report lives after its last write (`mongo_report_ttl`); whole seconds.
    pub report_ttl: Duration,
    /// How long an operation waits for a usable server.
    pub server_selection_timeout: Duration,
}

impl MongoConfig {
    /// The defaults, with this URL.
    #[must_use]
    pub fn new(mongo_url: impl Into<String>) -> Self {
        Self {
            mongo_url: mongo_url.into(),
            schema_name: DEFAULT_SCHEMA_NAME.to_owned(),
            max_pool_size: DEFAULT_MAX_POOL_SIZE,
            report_ttl: DEFAULT_REPORT_TTL,
            server_selection_timeout: DEFAULT_SERVER_SELECTION_TIMEOUT,
        }
    }

    /// Every problem with this configuration, each naming its setting (without contacting
    /// any server), so a binary can refuse to start with all of them listed.
    ///
    /// # Errors
    /// The list of problems, when there is at least one.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Err(e) = ConnectionString::parse(&self.mongo_url) {
            problems.push(format!(
                "mongo_url {}: not a MongoDB connection string: {e}",
                redact_url(&self.mongo_url)
            ));
        }
        if let Err(why) = check_database_name(&self.schema_name) {
            problems.push(format!("schema_name {:?}: {why}", self.schema_name));
        }
        if self.max_pool_size == 0 {
            problems.push("mongo_max_pool_size: must be at least 1".to_owned());
        }
        if self.report_ttl.as_secs() > i32::MAX as u64 {
            problems.push(format!(
                "mongo_report_ttl: at most {} seconds (MongoDB's expireAfterSeconds is 32-bit)",
                i32::MAX
            ));
        }
        if self.server_selection_timeout.is_zero() {
            problems.push("server selection timeout: must be positive".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("mongo_url", &redact_url(&self.mongo_url))
            .field("schema_name", &self.schema_name)
            .field("max_pool_size", &self.max_pool_size)
            .field("report_ttl", &self.report_ttl)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .finish()
    }
}

/// The URL with its password, if any, replaced by `***`.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, hosts)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    if user.len() == userinfo.len() {
        return url.to_owned();
    }
    format!("{scheme}://{user}:***@{hosts}{tail}")
}

/// MongoDB's rules for a database name (on every platform).
fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() >= 64 {
        return Err("must be shorter than 64 bytes".to_owned());
    }
    if let Some(c) = name.chars().find(|c| {
        matches!(
            c,
            '/' | '\\' | '.' | ' ' | '"' | '$' | '*' | '<' | '>' | ':' | '|' | '?' | '\0'
        )
    }) {
        return Err(format!("must not contain {c:?}"));
    }
    Ok(())
}

/// The [`Store`] on a MongoDB database. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    hosts: String,
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore")
            .field("hosts", &self.hosts)
            .field("database", &self.db.name())
            .finish_non_exhaustive()
    }
}

/// The outcome of a driver call after the retries, and whether any attempt failed in a way
/// that may have been applied.
struct Attempted<T> {
    result: Result<T, MongoError>,
    retried: bool,
}

impl MongoStore {
    /// Connects, creates the collections that do not exist yet and makes sure of the TTL
    /// index of `nebula_reports` (creating it, or changing its `expireAfterSeconds` to
    /// `report_ttl`). Safe to call again, from any number of processes.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the configuration is invalid (every problem listed),
    /// or no server answers within the server selection timeout, or the server refuses.
    pub async fn connect(config: &MongoConfig) -> Result<Self, StoreError> {
        config.validate().map_err(|problems| {
            StoreError::Unavailable(format!("invalid MongoDB settings: {}", problems.join("; ")))
        })?;
        let url = redact_url(&config.mongo_url);
        let mut options = ClientOptions::parse(config.mongo_url.as_str())
            .await
            .map_err(|e| StoreError::Unavailable(format!("mongo_url {url}: {e}")))?;
        options.max_pool_size.get_or_insert(config.max_pool_size);
        options
            .server_selection_timeout
            .get_or_insert(config.server_selection_timeout);
        options.app_name.get_or_insert_with(|| "nebula".to_owned());
        let wc = options
            .write_concern
            .get_or_insert_with(WriteConcern::default);
        wc.w.get_or_insert(Acknowledgment::Majority);
        wc.journal.get_or_insert(true);
        let hosts = options
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let client = Client::with_options(options)
            .map_err(|e| StoreError::Unavailable(format!("mongo_url {url}: {e}")))?;
        let store = Self {
            db: client.database(&config.schema_name),
            hosts,
        };
        store.prepare(config.report_ttl).await?;
        Ok(store)
    }

    /// The database the documents live in (`schema_name`).
    #[must_use]
    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    fn coll(&self, coll: Collection) -> mongodb::Collection<Document> {
        self.db.collection(coll.name())
    }

    /// The collection for reading: raw documents, decoded by [`codec`] (the driver's
    /// `Document` would read a stored `{"$oid": ..}` object as an ObjectId).
    fn raw_coll(&self, coll: Collection) -> mongodb::Collection<RawDocumentBuf> {
        self.db.collection(coll.name())
    }

    /// Creates missing collections and the reports' TTL index.
    async fn prepare(&self, report_ttl: Duration) -> Result<(), StoreError> {
        let existing = self
            .retry("list collections", || {
                self.db.list_collection_names().into_future()
            })
            .await
            .result
            .map_err(|e| self.fail("list collections", &e))?;
        for coll in Collection::ALL {
            if existing.iter().any(|n| n == coll.name()) {
                continue;
            }
            let created = self
                .retry("create collection", || {
                    self.db.create_collection(coll.name()).into_future()
                })
                .await
                .result;
            match created {
                Ok(()) => tracing::info!(collection = coll.name(), "created MongoDB collection"),
                // Another process created it first.
                Err(e) if code(&e) == Some(NAMESPACE_EXISTS) => {}
                Err(e) => return Err(self.fail(&format!("create {}", coll.name()), &e)),
            }
        }
        self.ensure_report_ttl(report_ttl).await
    }

    async fn ensure_report_ttl(&self, ttl: Duration) -> Result<(), StoreError> {
        let reports = self.coll(Collection::Reports);
        let index = || {
            IndexModel::builder()
                .keys(doc! { FIELD_REPORT_DATE: 1 })
                .options(
                    IndexOptions::builder()
                        .name(REPORT_TTL_INDEX.to_owned())
                        .expire_after(Duration::from_secs(ttl.as_secs()))
                        .build(),
                )
                .build()
        };
        let created = self
            .retry("create the reports' TTL index", || {
                reports.create_index(index()).into_future()
            })
            .await
            .result;
        let Err(e) = created else {
            return Ok(());
        };
        if !code(&e).is_some_and(|c| INDEX_OPTIONS_CONFLICT.contains(&c)) {
            return Err(self.fail("create the reports' TTL index", &e));
        }
        // The index exists with another expireAfterSeconds: change it in place.
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let command = doc! {
            "collMod": Collection::Reports.name(),
            "index": { "name": REPORT_TTL_INDEX, "expireAfterSeconds": secs },
        };
        let modified = self
            .retry("change the reports' TTL", || {
                self.db.run_command(command.clone()).into_future()
            })
            .await
            .result;
        match modified {
            Ok(_) => {
                tracing::info!(
                    ttl_seconds = secs,
                    "changed the expireAfterSeconds of {}.{REPORT_TTL_INDEX}",
                    Collection::Reports.name()
                );
                Ok(())
            }
            Err(e) => {
                // A server without collMod on indexes: drop and create again.
                tracing::warn!(error = %e, "collMod of the reports' TTL index failed; recreating it");
                self.retry("drop the reports' TTL index", || {
                    reports.drop_index(REPORT_TTL_INDEX).into_future()
                })
                .await
                .result
                .map_err(|e| self.fail("drop the reports' TTL index", &e))?;
                self.retry("create the reports' TTL index", || {
                    reports.create_index(index()).into_future()
                })
                .await
                .result
                .map(drop)
                .map_err(|e| self.fail("create the reports' TTL index", &e))
            }
        }
    }

    /// Runs `op` until it succeeds, fails for good, or has failed transiently [`ATTEMPTS`]
    /// times, sleeping 50 ms, 200 ms, 800 ms between attempts.
    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Attempted<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, MongoError>>,
    {
        let mut retried = false;
        let mut backoff = Backoff::new(FIRST_BACKOFF, FIRST_BACKOFF * 16).factor(4);
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                    let delay = backoff.next();
                    tracing::warn!(
                        attempt,
                        error = %e,
                        "MongoDB {what} failed transiently; retrying in {delay:?}"
                    );
                    retried = true;
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                result => return Attempted { result, retried },
            }
        }
    }

    /// The error for a failed driver call.
    fn fail(&self, what: &str, e: &MongoError) -> StoreError {
        match *e.kind {
            ErrorKind::BsonDeserialization(_) => {
                StoreError::Corrupt(format!("MongoDB {what} on {}: {e}", self.db.name()))
            }
            ErrorKind::ServerSelection { .. } => StoreError::Unavailable(format!(
                "MongoDB {what}: no usable server at {}: {e}",
                self.hosts
            )),
            _ if is_transient(e) => StoreError::Unavailable(format!(
                "MongoDB {what} on {}: still failing after {ATTEMPTS} attempts: {e}",
                self.hosts
            )),
            _ => StoreError::Unavailable(format!("MongoDB {what} on {}: {e}", self.hosts)),
        }
    }

    /// The revision and write id of `key`, if it exists.
    async fn current(
        &self,
        coll: Collection,
        key: &str,
    ) -> Result<Option<(u64, Option<ObjectId>)>, StoreError> {
        let c = self.raw_coll(coll);
        let found = self
            .retry("read", || {
                c.find_one(doc! { FIELD_KEY: key })
                    .projection(doc! { FIELD_REV: 1, FIELD_WRITE_ID: 1 })
                    .into_future()
            })
            .await
            .result
            .map_err(|e| self.fail(&format!("read of {}/{key}", coll.name()), &e))?;
        match found {
            None => Ok(None),
            Some(d) => {
                let rev = decode_rev(coll, key, &d)?;
                Ok(Some((rev, d.get_object_id(FIELD_WRITE_ID).ok())))
            }
        }
    }

    /// The stored form of one version of a document.
    fn record(coll: Collection, rev: i64, write_id: ObjectId, body: &Bson) -> Document {
        let mut record = doc! {
            FIELD_REV: rev,
            FIELD_WRITE_ID: write_id,
            FIELD_DOC: body.clone(),
        };
        if coll == Collection::Reports {
            record.insert(FIELD_REPORT_DATE, DateTime::now());
        }
        record
    }

    async fn insert(
        &self,
        coll: Collection,
        key: &str,
        body: &Bson,
        write_id: ObjectId,
    ) -> Result<u64, StoreError> {
        let c = self.coll(coll);
        let mut record = Self::record(coll, 1, write_id, body);
        record.insert(FIELD_KEY, key);
        for _ in 0..CAS_ROUNDS {
            let result = self
                .retry("insert", || c.insert_one(&record).into_future())
                .await
                .result;
            match result {
                Ok(_) => return Ok(1),
                Err(e) if code(&e) == Some(DUPLICATE_KEY) => match self.current(coll, key).await? {
                    // An earlier attempt of this very call landed.
                    Some((rev, Some(w))) if w == write_id => return Ok(rev),
                    Some((rev, _)) => return Err(StoreError::Conflict { found: Some(rev) }),
                    // Deleted since: try again.
                    None => {}
                },
                Err(e) => return Err(self.fail(&format!("insert of {}/{key}", coll.name()), &e)),
            }
        }
        Err(StoreError::Conflict { found: None })
    }

    async fn replace(
        &self,
        coll: Collection,
        key: &str,
        body: &Bson,
        want: u64,
        write_id: ObjectId,
    ) -> Result<u64, StoreError> {
        // A revision beyond i64 cannot be stored, so it is never found.
        let (Ok(want_i), Some(Ok(next_i))) =
            (i64::try_from(want), want.checked_add(1).map(i64::try_from))
        else {
            let found = self.current(coll, key).await?.map(|(rev, _)| rev);
            return Err(StoreError::Conflict { found });
        };
        let c = self.coll(coll);
        let filter = doc! { FIELD_KEY: key, FIELD_REV: want_i };
        let record = Self::record(coll, next_i, write_id, body);
        for _ in 0..CAS_ROUNDS {
            let result = self
                .retry("replace", || {
                    c.replace_one(filter.clone(), &record).into_future()
                })
                .await
                .result
                .map_err(|e| self.fail(&format!("replace of {}/{key}", coll.name()), &e))?;
            if result.matched_count > 0 {
                return Ok(want + 1);
            }
            match self.current(coll, key).await? {
                Some((rev, Some(w))) if w == write_id => return Ok(rev),
                // Deleted and created again up to the same revision since: try again.
                Some((rev, _)) if rev == want => {}
                found => {
                    return Err(StoreError::Conflict {
                        found: found.map(|(rev, _)| rev),
                    });
                }
            }
        }
        Err(StoreError::Conflict { found: Some(want) })
    }
}

/// The server's error code, if the server answered with one.
fn code(e: &MongoError) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        _ => None,
    }
}

/// Whether trying again may succeed: network trouble, or what MongoDB labels or codes as
/// retryable (elections, shutdowns, overload).
fn is_transient(e: &MongoError) -> bool {
    use mongodb::error::{RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR};
    if e.contains_label(RETRYABLE_WRITE_ERROR)
        || e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || e.contains_label("RetryableError")
        || e.contains_label("SystemOverloadedError")
    {
        return true;
    }
    match &*e.kind {
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => true,
        _ => code(e).is_some_and(|c| RETRYABLE_CODES.contains(&c)),
    }
}

fn corrupt(coll: Collection, key: &str, why: &str) -> StoreError {
    StoreError::Corrupt(format!("document {}/{key}: {why}", coll.name()))
}

fn decode_rev(coll: Collection, key: &str, d: &RawDocument) -> Result<u64, StoreError> {
    let field = d
        .get(FIELD_REV)
        .map_err(|e| corrupt(coll, key, &e.to_string()))?;
    let rev = match field {
        Some(RawBsonRef::Int64(r)) => u64::try_from(r).ok(),
        Some(RawBsonRef::Int32(r)) => u64::try_from(r).ok(),
        _ => None,
    };
    match rev {
        Some(r) if r > 0 => Ok(r),
        _ => Err(corrupt(
            coll,
            key,
            &format!("{FIELD_REV} is not a positive integer: {field:?}"),
        )),
    }
}

fn decode(coll: Collection, key: &str, d: &RawDocument) -> Result<Stored, StoreError> {
    let rev = decode_rev(coll, key, d)?;
    let body = d
        .get(FIELD_DOC)
        .map_err(|e| corrupt(coll, key, &e.to_string()))?
        .ok_or_else(|| corrupt(coll, key, &format!("has no {FIELD_DOC} field")))?;
    let doc = codec::to_json(body).map_err(|why| corrupt(coll, key, &why))?;
    Ok(Stored { rev, doc })
}

fn encode(coll: Collection, key: &str, doc: &serde_json::Value) -> Result<Bson, StoreError> {
    codec::to_bson(doc).map_err(|why| {
        StoreError::Unavailable(format!("cannot store {}/{key}: {why}", coll.name()))
    })
}

#[async_trait]
impl Store for MongoStore {
    async fn get(&self, coll: Collection, key: &str) -> Result<Option<Stored>, StoreError> {
        let c = self.raw_coll(coll);
        let found = self
            .retry("read", || c.find_one(doc! { FIELD_KEY: key }).into_future())
            .await
            .result
            .map_err(|e| self.fail(&format!("read of {}/{key}", coll.name()), &e))?;
        found.map(|d| decode(coll, key, &d)).transpose()
    }

    async fn list(&self, coll: Collection) -> Result<Vec<(String, Stored)>, StoreError> {
        let c = &self.raw_coll(coll);
        let docs: Vec<RawDocumentBuf> = self
            .retry("list", || async move {
                c.find(doc! {})
                    .sort(doc! { FIELD_KEY: 1 })
                    .await?
                    .try_collect()
                    .await
            })
            .await
            .result
            .map_err(|e| self.fail(&format!("list of {}", coll.name()), &e))?;
        docs.iter()
            .map(|d| {
                let key = match d.get(FIELD_KEY) {
                    Ok(Some(RawBsonRef::String(k))) => k.to_owned(),
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "{}.{} holds a document whose _id is not a string ({other:?}); \
                             is this a database of the original (Python) Nebula? Use another \
                             schema_name",
                            self.db.name(),
                            coll.name()
                        )));
                    }
                };
                let stored = decode(coll, &key, d)?;
                Ok((key, stored))
            })
            .collect()
    }

    async fn put(
        &self,
        coll: Collection,
        key: &str,
        doc: &serde_json::Value,
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let body = encode(coll, key, doc)?;
        let write_id = ObjectId::new();
        match expect {
            Expect::Absent => self.insert(coll, key, &body, write_id).await,
            Expect::Rev(want) => self.replace(coll, key, &body, want, write_id).await,
        }
    }

    async fn delete(&self, coll: Collection, key: &str, rev: u64) -> Result<(), StoreError> {
        let Ok(rev_i) = i64::try_from(rev) else {
            let found = self.current(coll, key).await?.map(|(r, _)| r);
            return Err(StoreError::Conflict { found });
        };
        let c = self.coll(coll);
        let filter = doc! { FIELD_KEY: key, FIELD_REV: rev_i };
        for _ in 0..CAS_ROUNDS {
            let Attempted { result, retried } = self
                .retry("delete", || c.delete_one(filter.clone()).into_future())
                .await;
            let result =
                result.map_err(|e| self.fail(&format!("delete of {}/{key}", coll.name()), &e))?;
            if result.deleted_count > 0 {
                return Ok(());
            }
            match self.current(coll, key).await?.map(|(r, _)| r) {
                // An earlier attempt that failed on the way back may have deleted it.
                None if retried => return Ok(()),
                // Deleted and created again up to the same revision since: try again.
                Some(found) if found == rev => {}
                found => return Err(StoreError::Conflict { found }),
            }
        }
        Err(StoreError::Conflict { found: Some(rev) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MongoConfig, check_database_name, redact_url};

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("mongodb://nebula:s3cr%40t@db1:27017,db2/admin?replicaSet=rs0"),
            "mongodb://nebula:***@db1:27017,db2/admin?replicaSet=rs0"
        );
        assert_eq!(
            redact_url("mongodb+srv://only-user@cluster.example"),
            "mongodb+srv://only-user@cluster.example"
        );
        assert_eq!(
            redact_url("mongodb://127.0.0.1:27017"),
            "mongodb://127.0.0.1:27017"
        );
        let c = MongoConfig::new("mongodb://u:hunter2@h/");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("u:***@h"),
            "{shown}"
        );
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = MongoConfig::new("mongodb://127.0.0.1:27017");
        assert_eq!(c.schema_name, "nebula");
        assert_eq!(c.max_pool_size, 25);
        assert_eq!(c.report_ttl, Duration::from_secs(3600));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_listed() {
        let c = MongoConfig {
            mongo_url: "http://nope".to_owned(),
            schema_name: "a.b".to_owned(),
            max_pool_size: 0,
            report_ttl: Duration::from_secs(u64::from(u32::MAX)),
            server_selection_timeout: Duration::ZERO,
        };
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        for (p, setting) in problems.iter().zip([
            "mongo_url",
            "schema_name",
            "mongo_max_pool_size",
            "mongo_report_ttl",
            "server selection",
        ]) {
            assert!(p.starts_with(setting), "{p}");
        }
    }

    #[test]
    fn database_names_follow_mongodb() {
        assert!(check_database_name("nebula").is_ok());
        assert!(check_database_name("nebula_test-1").is_ok());
        for bad in ["", "a/b", "a b", "a$b", &"x".repeat(64)] {
            assert!(check_database_name(bad).is_err(), "{bad:?}");
        }
    }
}

//! What every nebula-mongo test binary shares: finding the server, a database of one's own.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use mongodb::bson::{Document, doc};
use nebula_mongo::{MongoConfig, MongoStore};

/// Where `.ci/mongo.sh` starts secantusdb.
pub const LOCAL_ADDR: &str = "127.0.0.1:27017";
/// Set to a MongoDB URL to run the tests against that server instead (e.g. a real MongoDB).
pub const URL_ENV: &str = "NEBULA_TEST_MONGODB_URL";
/// Set to `1` to fail, not skip, when no server answers.
pub const REQUIRE_ENV: &str = "NEBULA_REQUIRE_MONGO";

/// The URL of the server under test, or `None` after printing `SKIPPED` when no server answers
/// (a failure instead with `NEBULA_REQUIRE_MONGO=1`).
pub async fn server_url() -> Option<String> {
    if let Ok(url) = std::env::var(URL_ENV)
        && !url.is_empty()
    {
        return Some(url);
    }
    let up = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(LOCAL_ADDR)
        )
        .await,
        Ok(Ok(_))
    );
    if up {
        return Some(format!("mongodb://{LOCAL_ADDR}"));
    }
    assert!(
        std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
        "{REQUIRE_ENV}=1 but no MongoDB-compatible server answers on {LOCAL_ADDR}; \
         run .ci/mongo.sh (secantusdb) or set {URL_ENV}"
    );
    println!(
        "SKIPPED: no MongoDB-compatible server on {LOCAL_ADDR}; run .ci/mongo.sh (secantusdb) \
         or set {URL_ENV}"
    );
    None
}

/// `url` with one more query option.
pub fn with_option(url: &str, option: &str) -> String {
    if url.contains('?') {
        format!("{url}&{option}")
    } else {
        let authority_ends_with_slash = url
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains('/'));
        if authority_ends_with_slash {
            format!("{url}?{option}")
        } else {
            format!("{url}/?{option}")
        }
    }
}

/// A database of this test's own, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub url: String,
    pub name: String,
    pub client: mongodb::Client,
}

impl TestDb {
    pub async fn new(url: &str, test: &str) -> Self {
        let name = format!("nebula_test_{test}_{:08x}", rand::random::<u32>());
        let client = mongodb::Client::with_uri_str(url).await.unwrap();
        Self {
            url: url.to_owned(),
            name,
            client,
        }
    }

    /// The store's settings for this database.
    pub fn config(&self) -> MongoConfig {
        MongoConfig {
            schema_name: self.name.clone(),
            ..MongoConfig::new(self.url.clone())
        }
    }

    pub async fn store(&self) -> MongoStore {
        MongoStore::connect(&self.config()).await.unwrap()
    }

    pub fn raw(&self, coll: &str) -> mongodb::Collection<Document> {
        self.client.database(&self.name).collection(coll)
    }

    pub async fn drop_db(self) {
        self.client.database(&self.name).drop().await.unwrap();
    }

    /// "secantusdb x.y" or "MongoDB x.y", for the test log.
    pub async fn server_name(&self) -> String {
        let info = self
            .client
            .database("admin")
            .run_command(doc! { "buildInfo": 1 })
            .await
            .unwrap_or_default();
        let version = info.get_str("version").unwrap_or("?").to_owned();
        let text = format!("{info}").to_lowercase();
        if text.contains("secantus") {
            format!("secantusdb (reports MongoDB {version})")
        } else {
            format!("MongoDB {version}")
        }
    }
}

//! The names of every setting each binary reads, so that a config file key can be checked: its
//! own, another Nebula binary's, the original Nebula's that this version has no use for, or a
//! mistake (with the closest known name suggested).
//!
//! The lists are the readers' keys; `config::tests` checks that every key a reader asks for is
//! listed for its binary.

/// A Nebula binary, for the settings it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `nebula standalone`.
    Standalone,
    /// `nebula-api-manager`.
    ApiManager,
    /// `nebula-worker-manager`.
    WorkerManager,
    /// `nebula <noun> <verb>`, the client.
    Client,
}

const ALL: [Binary; 4] = [
    Binary::Standalone,
    Binary::ApiManager,
    Binary::WorkerManager,
    Binary::Client,
];

/// The API's settings (standalone and the API manager).
const API: &[&str] = &[
    "nebula_bind",
    "nebula_data_dir",
    "auth_enabled",
    "basic_auth_enabled",
    "basic_auth_user",
    "basic_auth_password",
    "auth_token",
    "cache_time",
    "cache_max_size",
    "nebula_bcrypt_cost",
    "nebula_report_ttl",
    "mongo_report_ttl",
];

/// The engine and worker knobs (standalone and the worker manager).
const ENGINE: &[&str] = &[
    "docker_host",
    "registry_auth_user",
    "registry_auth_password",
    "registry_host",
    "nebula_parallelism",
    "nebula_manager_check_in_time",
    "nebula_reconcile_interval",
    "max_restart_wait_in_seconds",
    "nebula_stop_grace",
    "nebula_resync_spread",
    "nebula_report_enabled",
    "nebula_report_on_update_only",
    "report_on_update_only",
    "nebula_report_hostname",
    "nebula_report_timeout",
];

/// The worker manager's own settings.
const WORKER: &[&str] = &[
    "app_name",
    "device_group",
    "nebula_manager_uri",
    "nebula_manager_protocol",
    "nebula_manager_host",
    "nebula_manager_port",
    "nebula_manager_ca_file",
    "nebula_manager_auth_user",
    "nebula_manager_auth_password",
    "nebula_manager_auth_token",
    "nebula_manager_request_timeout",
    "nebula_report_transport",
    "nebula_worker_id",
];

/// RabbitMQ (the API manager and the worker manager).
const RABBIT: &[&str] = &[
    "rabbit_url",
    "rabbit_host",
    "rabbit_port",
    "rabbit_user",
    "rabbit_password",
    "rabbit_vhost",
    "nebula_rabbit_queue_expiry",
    "nebula_rabbit_frame_max",
    "nebula_rabbit_topology",
];

/// MongoDB (the API manager).
const MONGO: &[&str] = &["mongo_url", "schema_name", "mongo_max_pool_size"];

/// The client's settings.
const CLIENT: &[&str] = &[
    "nebula_manager_uri",
    "nebula_manager_auth_user",
    "nebula_manager_auth_password",
    "nebula_manager_auth_token",
    "nebula_manager_ca_file",
    "nebula_manager_request_timeout",
    "nebula_output",
];

/// Settings of the original Nebula that this version reads under no name: Kafka reporting
/// (reports go over HTTP or RabbitMQ), the pika heartbeat workaround, the Flask `ENV` switch,
/// and the reporter's consumer knobs.
const ORIGINAL_ONLY: &[&str] = &[
    "env",
    "rabbit_heartbeat",
    "reporting_fail_hard",
    "kafka_bootstrap_servers",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_plain_username",
    "kafka_sasl_plain_password",
    "kafka_ssl_keyfile",
    "kafka_ssl_password",
    "kafka_ssl_certfile",
    "kafka_ssl_cafile",
    "kafka_ssl_crlfile",
    "kafka_sasl_kerberos_service_name",
    "kafka_sasl_kerberos_domain_name",
    "kafka_topic",
    "kafka_auto_offset_reset",
    "kafka_group_id",
];

impl Binary {
    /// The binary's name, as its messages start.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Standalone => "nebula standalone",
            Self::ApiManager => "nebula-api-manager",
            Self::WorkerManager => "nebula-worker-manager",
            Self::Client => "the nebula client",
        }
    }

    /// Every setting the binary reads.
    #[must_use]
    pub fn keys(self) -> Vec<&'static str> {
        let groups: &[&[&str]] = match self {
            Self::Standalone => &[API, ENGINE],
            Self::ApiManager => &[API, RABBIT, MONGO],
            Self::WorkerManager => &[WORKER, ENGINE, RABBIT],
            Self::Client => &[CLIENT],
        };
        groups.iter().flat_map(|g| g.iter().copied()).collect()
    }

    /// Whether the binary reads `key`.
    #[must_use]
    pub fn reads(self, key: &str) -> bool {
        self.keys().contains(&key)
    }
}

/// What a config file key is to a binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// One of its settings.
    Own,
    /// A setting of other Nebula binaries (named, comma-separated), not of this one.
    OtherBinary(String),
    /// A setting of the original Nebula that this version does not use.
    OriginalOnly,
    /// Nobody's; the closest setting of this binary, when one is close.
    Unknown(Option<&'static str>),
}

/// What `key` (lower case) is to `binary`.
#[must_use]
pub fn classify(key: &str, binary: Binary) -> KeyKind {
    if binary.reads(key) {
        return KeyKind::Own;
    }
    let others: Vec<&str> = ALL
        .iter()
        .filter(|b| **b != binary && b.reads(key))
        .map(|b| b.name())
        .collect();
    if !others.is_empty() {
        return KeyKind::OtherBinary(others.join(", "));
    }
    if ORIGINAL_ONLY.contains(&key) {
        return KeyKind::OriginalOnly;
    }
    KeyKind::Unknown(closest(key, &binary.keys()))
}

/// The candidate nearest to `key` by edit distance, when near enough to be a slip: at most a
/// third of the key's length, or a candidate that ends with the key (`bind` -> `nebula_bind`).
fn closest(key: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let suffix = candidates
        .iter()
        .copied()
        .filter(|c| c.ends_with(&format!("_{key}")))
        .min_by_key(|c| c.len());
    if suffix.is_some() {
        return suffix;
    }
    candidates
        .iter()
        .copied()
        .map(|c| (strsim::damerau_levenshtein(key, c), c))
        .filter(|(d, _)| *d <= (key.len() / 3).max(1))
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_own_other_original_or_unknown() {
        assert_eq!(classify("nebula_bind", Binary::ApiManager), KeyKind::Own);
        assert_eq!(
            classify("device_group", Binary::ApiManager),
            KeyKind::OtherBinary("nebula-worker-manager".into())
        );
        assert_eq!(
            classify("mongo_url", Binary::WorkerManager),
            KeyKind::OtherBinary("nebula-api-manager".into())
        );
        assert_eq!(
            classify("kafka_topic", Binary::WorkerManager),
            KeyKind::OriginalOnly
        );
        assert_eq!(
            classify("rabbit_heartbeat", Binary::ApiManager),
            KeyKind::OriginalOnly
        );
    }

    #[test]
    fn a_slip_is_answered_with_the_closest_setting() {
        for (typed, binary, meant) in [
            ("bind", Binary::ApiManager, "nebula_bind"),
            ("nebula_bnid", Binary::ApiManager, "nebula_bind"),
            ("data_dir", Binary::Standalone, "nebula_data_dir"),
            ("cache_tme", Binary::ApiManager, "cache_time"),
            (
                "nebula_manager_check_in",
                Binary::WorkerManager,
                "nebula_manager_check_in_time",
            ),
            ("app_names", Binary::WorkerManager, "app_name"),
        ] {
            assert_eq!(
                classify(typed, binary),
                KeyKind::Unknown(Some(meant)),
                "{typed}"
            );
        }
        assert_eq!(
            classify("colour_scheme", Binary::ApiManager),
            KeyKind::Unknown(None)
        );
    }

    #[test]
    fn no_setting_is_listed_twice_for_one_binary() {
        for binary in ALL {
            let keys = binary.keys();
            let unique: std::collections::BTreeSet<_> = keys.iter().collect();
            assert_eq!(unique.len(), keys.len(), "{binary:?}");
            for key in &keys {
                assert!(
                    !ORIGINAL_ONLY.contains(key),
                    "{key} is read and original-only"
                );
            }
        }
    }
}

//! Users, user groups and what a caller may do: the permission model of the v2 API.
//!
//! A user is `{user_name, password, token}` with both secrets stored as hashes (the hashing
//! itself is the API's business; this module never sees a plain secret except to index a
//! token). A user group grants its members `admin`, `pruning_allowed` and per-object
//! [`Access`] on apps, device groups and cron jobs. A user's [`Permissions`] are the union of
//! every group that lists them, and a caller is a [`Principal`].
//!
//! Differences from the original, on purpose: `rw` implies `ro`, and when two groups grant the
//! same object the stronger access wins (the original let the last group win).
//!
//! # Token lookup without a scan
//! Each user document carries `token_index`, the first [`TOKEN_INDEX_HEX`] hex digits of the
//! SHA-256 of the plain token. The manager keeps, per index, a bucket of `(user_name, token
//! hash)` entries, so authenticating a token reads one bucket and verifies only its few
//! entries, whatever the number of users (see `Manager::token_candidates`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::StoreError;
use crate::validate::{self, FieldError};

/// Hex digits of SHA-256(token) kept as the token's index: 65,536 buckets.
pub const TOKEN_INDEX_HEX: usize = 4;
/// Most members of one group, and most grants of one kind in one group.
pub const MAX_GROUP_ENTRIES: usize = 10_000;

/// The access a grant gives. `Rw` implies `Ro`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read only (`"ro"`).
    Ro,
    /// Read and write (`"rw"`).
    Rw,
}

impl Access {
    /// Parses `"ro"` or `"rw"`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ro" => Some(Self::Ro),
            "rw" => Some(Self::Rw),
            _ => None,
        }
    }

    /// The wire form.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ro => "ro",
            Self::Rw => "rw",
        }
    }

    /// Whether holding `self` is enough for `needed` (`rw` satisfies `ro`).
    #[must_use]
    pub fn satisfies(self, needed: Self) -> bool {
        self >= needed
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of objects a group grants access to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// Apps (`apps`).
    App,
    /// Device groups (`device_groups`).
    DeviceGroup,
    /// Cron jobs (`cron_jobs`).
    CronJob,
}

impl ObjectKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::App, Self::DeviceGroup, Self::CronJob];

    /// The group field that grants this kind.
    #[must_use]
    pub fn field(self) -> &'static str {
        match self {
            Self::App => "apps",
            Self::DeviceGroup => "device_groups",
            Self::CronJob => "cron_jobs",
        }
    }
}

/// Object name -> access.
pub type Grants = BTreeMap<String, Access>;

/// A stored user. `password` and `token` are hashes; the plain secrets are never stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's name (the key).
    pub user_name: String,
    /// The password hash.
    pub password: String,
    /// The token hash.
    pub token: String,
    /// [`token_index`] of the plain token.
    #[serde(default)]
    pub token_index: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("user_name", &self.user_name)
            .finish_non_exhaustive()
    }
}

/// A hashed token and its index.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash {
    /// The hash of the token.
    pub hash: String,
    /// [`token_index`] of the plain token.
    pub index: String,
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHash")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// What changes in a user (already hashed). `None` keeps the field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserUpdate {
    /// A new password hash.
    pub password: Option<String>,
    /// A new token.
    pub token: Option<TokenHash>,
}

/// One entry of a token bucket: a user whose token has the bucket's index.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCandidate {
    /// The user.
    pub user_name: String,
    /// The hash of the token the entry was made for; it stands only while the user still holds it.
    pub token: String,
}

impl fmt::Debug for TokenCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCandidate")
            .field("user_name", &self.user_name)
            .finish_non_exhaustive()
    }
}

/// The index of a plain token: the first [`TOKEN_INDEX_HEX`] hex digits of its SHA-256.
#[must_use]
pub fn token_index(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(TOKEN_INDEX_HEX);
    for byte in digest.iter().take(TOKEN_INDEX_HEX.div_ceil(2)) {
        out.push_str(&format!("{byte:02x}"));
    }
    out.truncate(TOKEN_INDEX_HEX);
    out
}

/// A stored user group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserGroup {
    /// The group's name (the key).
    pub user_group: String,
    /// Names of the users in the group.
    pub group_members: Vec<String>,
    /// Whether members may prune images.
    pub pruning_allowed: bool,
    /// Whether members are admins (every right).
    pub admin: bool,
    /// Access to apps.
    pub apps: Grants,
    /// Access to device groups.
    pub device_groups: Grants,
    /// Access to cron jobs.
    pub cron_jobs: Grants,
}

impl UserGroup {
    /// The grants of one kind.
    #[must_use]
    pub fn grants(&self, kind: ObjectKind) -> &Grants {
        match kind {
            ObjectKind::App => &self.apps,
            ObjectKind::DeviceGroup => &self.device_groups,
            ObjectKind::CronJob => &self.cron_jobs,
        }
    }
}

/// A change to a user group: only the fields given change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct UserGroupPatch {
    pub group_members: Option<Vec<String>>,
    pub pruning_allowed: Option<bool>,
    pub admin: Option<bool>,
    pub apps: Option<Grants>,
    pub device_groups: Option<Grants>,
    pub cron_jobs: Option<Grants>,
}

impl UserGroupPatch {
    /// Whether the patch changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Applies the patch to a group.
    pub fn apply(self, group: &mut UserGroup) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { group.$f = v; } )* };
        }
        set!(
            group_members,
            pruning_allowed,
            admin,
            apps,
            device_groups,
            cron_jobs
        );
    }
}

/// Checks a user name (`user_name`).
///
/// # Errors
/// A [`FieldError`] on `user_name`.
pub fn validate_user_name(name: &str) -> Result<(), FieldError> {
    validate::object_name("user_name", name)
}

/// Checks a user group name (`user_group`).
///
/// # Errors
/// A [`FieldError`] on `user_group`.
pub fn validate_user_group_name(name: &str) -> Result<(), FieldError> {
    validate::object_name("user_group", name)
}

/// Checks a group document: member names and granted object names.
///
/// # Errors
/// Every rule broken, each naming its field (`group_members[2]`, `apps.<name>`, ...).
pub fn validate_user_group(group: &UserGroup) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if group.group_members.len() > MAX_GROUP_ENTRIES {
        errors.push(FieldError::new(
            "group_members",
            format!("must have at most {MAX_GROUP_ENTRIES} entries"),
        ));
    }
    for (i, member) in group.group_members.iter().enumerate() {
        if validate_user_name(member).is_err() {
            errors.push(FieldError::new(
                format!("group_members[{i}]"),
                "must be a user name: 1 to 63 characters of A-Z a-z 0-9 _ . - starting with a letter or digit",
            ));
        }
    }
    for kind in ObjectKind::ALL {
        let grants = group.grants(kind);
        if grants.len() > MAX_GROUP_ENTRIES {
            errors.push(FieldError::new(
                kind.field(),
                format!("must have at most {MAX_GROUP_ENTRIES} entries"),
            ));
        }
        for name in grants.keys() {
            if let Err(e) = validate::object_name(&format!("{}.{name}", kind.field()), name) {
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What a user may do: the merge of every group that lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Every right.
    pub admin: bool,
    /// May prune images.
    pub pruning_allowed: bool,
    /// Access to apps.
    pub apps: Grants,
    /// Access to device groups.
    pub device_groups: Grants,
    /// Access to cron jobs.
    pub cron_jobs: Grants,
}

impl Permissions {
    /// The permissions of `user_name` given every group: the union of the groups listing the
    /// user; for an object granted by several groups the strongest access wins.
    #[must_use]
    pub fn of<'a>(user_name: &str, groups: impl IntoIterator<Item = &'a UserGroup>) -> Self {
        let mut merged = Self::default();
        for group in groups {
            if !group.group_members.iter().any(|m| m == user_name) {
                continue;
            }
            merged.admin |= group.admin;
            merged.pruning_allowed |= group.pruning_allowed;
            for kind in ObjectKind::ALL {
                let into = merged.grants_mut(kind);
                for (name, access) in group.grants(kind) {
                    let entry = into.entry(name.clone()).or_insert(*access);
                    *entry = (*entry).max(*access);
                }
            }
        }
        merged
    }

    /// The grants of one kind.
    #[must_use]
    pub fn grants(&self, kind: ObjectKind) -> &Grants {
        match kind {
            ObjectKind::App => &self.apps,
            ObjectKind::DeviceGroup => &self.device_groups,
            ObjectKind::CronJob => &self.cron_jobs,
        }
    }

    fn grants_mut(&mut self, kind: ObjectKind) -> &mut Grants {
        match kind {
            ObjectKind::App => &mut self.apps,
            ObjectKind::DeviceGroup => &mut self.device_groups,
            ObjectKind::CronJob => &mut self.cron_jobs,
        }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The local admin of the configuration: every right.
    LocalAdmin,
    /// Anyone, when authentication is turned off: every right, as the original.
    Anonymous,
    /// A user of the store, with their merged permissions.
    User {
        /// The user's name.
        name: String,
        /// What their groups allow.
        permissions: Permissions,
    },
}

impl Principal {
    /// Whether the caller has every right.
    #[must_use]
    pub fn is_admin(&self) -> bool {
        match self {
            Self::LocalAdmin | Self::Anonymous => true,
            Self::User { permissions, .. } => permissions.admin,
        }
    }

    /// Whether the caller may prune images (admins may).
    #[must_use]
    pub fn can_prune(&self) -> bool {
        match self {
            Self::User { permissions, .. } => permissions.admin || permissions.pruning_allowed,
            _ => self.is_admin(),
        }
    }

    /// Whether the caller has at least `needed` on the object `name` of `kind`.
    #[must_use]
    pub fn can(&self, kind: ObjectKind, name: &str, needed: Access) -> bool {
        match self {
            Self::User { permissions, .. } => {
                permissions.admin
                    || permissions
                        .grants(kind)
                        .get(name)
                        .is_some_and(|a| a.satisfies(needed))
            }
            _ => self.is_admin(),
        }
    }

    /// The user's name, for logs (`None` for the local admin and anonymous callers).
    #[must_use]
    pub fn user_name(&self) -> Option<&str> {
        match self {
            Self::User { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// Why a users or user-groups command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// Create of a user that exists.
    #[error("user exists")]
    UserExists,
    /// A command on a user that does not exist.
    #[error("user does not exist")]
    UserNotFound,
    /// Create of a user group that exists.
    #[error("user group exists")]
    UserGroupExists,
    /// A command on a user group that does not exist.
    #[error("user group does not exist")]
    UserGroupNotFound,
    /// The input broke validation rules; nothing was stored.
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The document kept changing under this write.
    #[error("too many concurrent writes to the same document; try again")]
    Contended,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, members: &[&str]) -> UserGroup {
        UserGroup {
            user_group: name.into(),
            group_members: members.iter().map(|m| (*m).to_owned()).collect(),
            ..UserGroup::default()
        }
    }

    fn grants(entries: &[(&str, Access)]) -> Grants {
        entries.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect()
    }

    fn user(permissions: Permissions) -> Principal {
        Principal::User {
            name: "u".into(),
            permissions,
        }
    }

    #[test]
    fn rw_implies_ro_and_nothing_implies_anything_else() {
        assert!(Access::Rw.satisfies(Access::Ro));
        assert!(Access::Rw.satisfies(Access::Rw));
        assert!(Access::Ro.satisfies(Access::Ro));
        assert!(!Access::Ro.satisfies(Access::Rw));
        assert_eq!(Access::parse("ro"), Some(Access::Ro));
        assert_eq!(Access::parse("rw"), Some(Access::Rw));
        assert_eq!(Access::parse("RW"), None);
        assert_eq!(Access::parse("w"), None);
        assert_eq!(serde_json::to_value(Access::Rw).unwrap(), "rw");
    }

    #[test]
    fn permissions_merge_every_group_listing_the_user_strongest_access_wins() {
        let mut a = group("a", &["u", "v"]);
        a.apps = grants(&[("site", Access::Rw), ("lb", Access::Ro)]);
        a.cron_jobs = grants(&[("backup", Access::Ro)]);
        let mut b = group("b", &["u"]);
        b.apps = grants(&[("site", Access::Ro), ("db", Access::Ro)]);
        b.pruning_allowed = true;
        let mut c = group("c", &["v"]);
        c.admin = true;
        c.apps = grants(&[("other", Access::Rw)]);
        // Both orders give the same result: no "last group wins".
        for groups in [vec![&a, &b, &c], vec![&c, &b, &a]] {
            let p = Permissions::of("u", groups.iter().copied());
            assert_eq!(
                p.apps,
                grants(&[("site", Access::Rw), ("lb", Access::Ro), ("db", Access::Ro)])
            );
            assert_eq!(p.cron_jobs, grants(&[("backup", Access::Ro)]));
            assert!(p.device_groups.is_empty());
            assert!(p.pruning_allowed);
            assert!(!p.admin, "c does not list u");
        }
        assert_eq!(
            Permissions::of("nobody", [&a, &b, &c]),
            Permissions::default()
        );
        assert!(Permissions::of("v", [&a, &b, &c]).admin);
    }

    #[test]
    fn principals_can_what_their_permissions_say() {
        for p in [Principal::LocalAdmin, Principal::Anonymous] {
            assert!(p.is_admin() && p.can_prune());
            assert!(p.can(ObjectKind::App, "anything", Access::Rw));
        }
        let rw = user(Permissions {
            apps: grants(&[("site", Access::Rw)]),
            device_groups: grants(&[("dg", Access::Ro)]),
            ..Permissions::default()
        });
        assert!(rw.can(ObjectKind::App, "site", Access::Ro));
        assert!(rw.can(ObjectKind::App, "site", Access::Rw));
        assert!(!rw.can(ObjectKind::App, "site2", Access::Ro));
        assert!(
            !rw.can(ObjectKind::DeviceGroup, "site", Access::Ro),
            "kinds are separate"
        );
        assert!(rw.can(ObjectKind::DeviceGroup, "dg", Access::Ro));
        assert!(!rw.can(ObjectKind::DeviceGroup, "dg", Access::Rw));
        assert!(!rw.can(ObjectKind::CronJob, "dg", Access::Ro));
        assert!(!rw.is_admin() && !rw.can_prune());
        assert_eq!(rw.user_name(), Some("u"));

        let pruner = user(Permissions {
            pruning_allowed: true,
            ..Permissions::default()
        });
        assert!(pruner.can_prune() && !pruner.is_admin());
        assert!(!pruner.can(ObjectKind::App, "site", Access::Ro));

        let admin = user(Permissions {
            admin: true,
            ..Permissions::default()
        });
        assert!(admin.is_admin() && admin.can_prune());
        assert!(admin.can(ObjectKind::CronJob, "x", Access::Rw));
        assert!(!user(Permissions::default()).can(ObjectKind::App, "site", Access::Ro));
    }

    #[test]
    fn token_index_is_a_short_prefix_of_the_sha256() {
        let idx = token_index("abc");
        // SHA-256("abc") = ba7816bf...
        assert_eq!(idx, "ba78");
        assert_eq!(idx.len(), TOKEN_INDEX_HEX);
        assert_ne!(token_index("abd"), idx);
    }

    #[test]
    fn group_validation_names_the_field() {
        let mut g = group("g", &["ok", "bad name"]);
        g.apps = grants(&[("site", Access::Rw), ("-x", Access::Ro)]);
        g.cron_jobs = grants(&[("", Access::Ro)]);
        let errors = validate_user_group(&g).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["group_members[1]", "apps.-x", "cron_jobs."]);
        assert!(validate_user_group(&group("g", &["a", "b"])).is_ok());
        assert!(validate_user_name("~token").is_err());
        assert_eq!(
            validate_user_group_name("").unwrap_err().field,
            "user_group"
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let u = User {
            user_name: "u".into(),
            password: "$2b$hash".into(),
            token: "$2b$tok".into(),
            token_index: "abcd".into(),
        };
        let shown = format!("{u:?}");
        assert!(!shown.contains("hash") && !shown.contains("tok"));
    }
}

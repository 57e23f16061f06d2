//! Field errors and the rules the document types check while they parse: the limits, the
//! name rule. The lowest layer of validation: `model` builds on it, and `validate` (the rules
//! of whole documents) re-exports it, so the two never import each other.

use std::fmt;

/// Longest app name: `<name>-<index>` must stay a valid Docker container name.
pub const MAX_APP_NAME_LEN: usize = 63;
/// Most containers one rule may ask per host.
pub const MAX_CONTAINERS_PER_HOST: u32 = 1024;
/// Most entries in any list field, and most env vars.
pub const MAX_LIST_LEN: usize = 256;
/// Longest string in any field (image, env value, volume, ...).
pub const MAX_STRING_LEN: usize = 4096;

/// A rule a field broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct FieldError {
    /// The field, as the API names it (`starting_ports`, `env_vars.FOO`, ...).
    pub field: String,
    /// What the field must be.
    pub rule: String,
}

impl FieldError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, rule: impl fmt::Display) -> Self {
        Self {
            field: field.into(),
            rule: rule.to_string(),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// App, network and other object names: `[A-Za-z0-9][A-Za-z0-9_.-]*`, 1 to 63 characters.
///
/// # Errors
/// A [`FieldError`] on `app_name`.
pub fn app_name(name: &str) -> Result<(), FieldError> {
    object_name("app_name", name)
}

/// The name rule shared by apps and other named objects.
///
/// # Errors
/// A [`FieldError`] on `field`.
pub fn object_name(field: &str, name: &str) -> Result<(), FieldError> {
    let rule = "must be 1 to 63 characters of A-Z a-z 0-9 _ . - starting with a letter or digit";
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return Err(FieldError::new(field, rule)),
    }
    if name.len() > MAX_APP_NAME_LEN || !chars.all(is_name_char) {
        return Err(FieldError::new(field, rule));
    }
    Ok(())
}

//! What every handler and the auth gate share.

use std::sync::Arc;

use nebula_core::manager::Manager;

use crate::auth::AuthConfig;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The manager service.
    pub manager: Manager,
    /// Who may call.
    pub auth: Arc<AuthConfig>,
}

//! The worker's side of the API: fetch the desired state from a manager over HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nebula_core::device_group::{DeviceGroupInfo, DeviceGroupName};
use nebula_core::model::{App, AppName};
use nebula_core::worker::{DesiredSource, DesiredState, Selection, SourceError};
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH};

/// How a worker authenticates to its manager.
#[derive(Clone)]
pub enum ClientAuth {
    /// `NEBULA_MANAGER_AUTH_USER` / `NEBULA_MANAGER_AUTH_PASSWORD`.
    Basic {
        /// User.
        user: String,
        /// Password.
        password: String,
    },
    /// `NEBULA_MANAGER_AUTH_TOKEN`.
    Bearer(String),
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .finish_non_exhaustive(),
            Self::Bearer(_) => f.write_str("Bearer(<set>)"),
        }
    }
}

/// A [`DesiredSource`] reading `GET /api/v2/apps[/<app>]` of a manager, or, for a device
/// group, `GET /api/v2/device_groups/<dg>/info` with `If-None-Match` (a 304 answers with the
/// state last read).
#[derive(Clone, Debug)]
pub struct HttpSource {
    base: String,
    auth: Option<ClientAuth>,
    client: reqwest::Client,
    /// The last `/info` read: its group, ETag and state.
    last_info: Arc<Mutex<Option<LastInfo>>>,
}

#[derive(Debug)]
struct LastInfo {
    group: DeviceGroupName,
    etag: String,
    info: DeviceGroupInfo,
}

/// The TLS settings of the clients that call a manager: rustls with the ring provider,
/// trusting the webpki roots plus the PEM certificates of `extra_ca_pem`.
///
/// # Errors
/// When `extra_ca_pem` is not PEM, holds no certificate or a certificate rustls refuses.
pub fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut added = 0usize;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not a PEM certificate bundle ({e})"))?;
            roots
                .add(cert)
                .map_err(|e| format!("certificate refused ({e})"))?;
            added += 1;
        }
        if added == 0 {
            return Err("no PEM certificate in it".to_owned());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A `reqwest` client builder speaking http:// and https:// (see [`tls_config`]).
///
/// # Errors
/// As [`tls_config`].
pub fn client_builder(extra_ca_pem: Option<&[u8]>) -> Result<reqwest::ClientBuilder, String> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls_config(extra_ca_pem)?))
}

impl HttpSource {
    /// A source for the manager at `base` (`http://host:port[/prefix]`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        base: &str,
        auth: Option<ClientAuth>,
        timeout: Duration,
    ) -> Result<Self, SourceError> {
        Self::with_ca(base, auth, timeout, None)
    }

    /// A source for the manager at `base` (`http://` or `https://host:port[/prefix]`),
    /// trusting the public roots plus the PEM certificates of `extra_ca_pem` (a private CA).
    ///
    /// # Errors
    /// When the HTTP client cannot be built or `extra_ca_pem` holds no usable certificate.
    pub fn with_ca(
        base: &str,
        auth: Option<ClientAuth>,
        timeout: Duration,
        extra_ca_pem: Option<&[u8]>,
    ) -> Result<Self, SourceError> {
        let client = client_builder(extra_ca_pem)
            .map_err(SourceError::Unavailable)?
            .timeout(timeout)
            .build()
            .map_err(|e| SourceError::Unavailable(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            auth,
            client,
            last_info: Arc::new(Mutex::new(None)),
        })
    }

    fn request(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.get(format!("{}{path}", self.base));
        match &self.auth {
            Some(ClientAuth::Basic { user, password }) => req.basic_auth(user, Some(password)),
            Some(ClientAuth::Bearer(token)) => req.bearer_auth(token),
            None => req,
        }
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, serde_json::Value), SourceError> {
        let resp = self
            .request(path)
            .send()
            .await
            .map_err(|e| SourceError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(SourceError::Unauthorized(format!("{path}: 401")));
        }
        let body = resp
            .json()
            .await
            .map_err(|e| SourceError::Unavailable(format!("{path}: {e}")))?;
        Ok((status, body))
    }

    /// `GET /api/v2/status`: whether the manager answers and its store works.
    ///
    /// # Errors
    /// When it does not.
    pub async fn status(&self) -> Result<(), SourceError> {
        match self.get("/api/v2/status").await? {
            (StatusCode::OK, body) if body["api_available"] == true => Ok(()),
            (code, _) => Err(SourceError::Unavailable(format!("status answered {code}"))),
        }
    }

    fn remembered(&self, group: &DeviceGroupName) -> Option<(String, DeviceGroupInfo)> {
        let last = self
            .last_info
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref()
            .filter(|l| &l.group == group)
            .map(|l| (l.etag.clone(), l.info.clone()))
    }

    fn remember(&self, last: Option<LastInfo>) {
        *self
            .last_info
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = last;
    }

    /// `GET /api/v2/device_groups/<dg>/info`, conditional on the last reply's ETag.
    async fn device_group(&self, group: &DeviceGroupName) -> Result<DesiredState, SourceError> {
        let path = format!("/api/v2/device_groups/{group}/info");
        let remembered = self.remembered(group);
        let mut req = self.request(&path);
        if let Some((etag, _)) = &remembered {
            req = req.header(IF_NONE_MATCH, etag);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SourceError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        match status {
            StatusCode::NOT_MODIFIED => {
                return remembered
                    .map(|(_, info)| DesiredState::Group(info))
                    .ok_or_else(|| {
                        SourceError::Unavailable(format!("{path}: 304 to an unconditional request"))
                    });
            }
            StatusCode::UNAUTHORIZED => {
                return Err(SourceError::Unauthorized(format!("{path}: 401")));
            }
            _ => {}
        }
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| SourceError::Unavailable(format!("{path}: {e}")))?;
        match status {
            StatusCode::OK => {
                let info: DeviceGroupInfo = serde_json::from_value(body).map_err(|e| {
                    SourceError::Unavailable(format!("{path}: unreadable reply: {e}"))
                })?;
                self.remember(etag.map(|etag| LastInfo {
                    group: group.clone(),
                    etag,
                    info: info.clone(),
                }));
                Ok(DesiredState::Group(info))
            }
            StatusCode::FORBIDDEN if body["device_group_exists"] == false => {
                self.remember(None);
                Ok(DesiredState::NoGroup)
            }
            code => Err(SourceError::Unavailable(format!("{path}: {code}"))),
        }
    }

    async fn app(&self, name: &AppName) -> Result<Option<App>, SourceError> {
        match self.get(&format!("/api/v2/apps/{name}")).await? {
            (StatusCode::OK, body) => serde_json::from_value(body).map(Some).map_err(|e| {
                SourceError::Unavailable(format!("app {name}: unreadable document: {e}"))
            }),
            (StatusCode::FORBIDDEN, body) if body["app_exists"] == false => Ok(None),
            (code, _) => Err(SourceError::Unavailable(format!("app {name}: {code}"))),
        }
    }
}

#[async_trait]
impl DesiredSource for HttpSource {
    async fn fetch(&self, selection: &Selection) -> Result<DesiredState, SourceError> {
        let names: Vec<AppName> = match selection {
            Selection::DeviceGroup(group) => return self.device_group(group).await,
            Selection::Apps(names) => names.clone(),
            Selection::All => match self.get("/api/v2/apps").await? {
                (StatusCode::OK, body) => serde_json::from_value(body["apps"].clone())
                    .map_err(|e| SourceError::Unavailable(format!("app list: {e}")))?,
                (code, _) => return Err(SourceError::Unavailable(format!("app list: {code}"))),
            },
        };
        let replies = futures::future::join_all(names.iter().map(|n| self.app(n))).await;
        let mut apps = Vec::with_capacity(names.len());
        for reply in replies {
            if let Some(app) = reply? {
                apps.push(app);
            }
        }
        Ok(DesiredState::Apps(apps))
    }
}

/// Reports go to `POST /api/v2/reports` of the same manager, with the same credentials.
#[async_trait]
impl nebula_core::worker::report::ReportSink for HttpSource {
    async fn send(&self, report: &nebula_core::report::WorkerReport) -> Result<(), SourceError> {
        let path = "/api/v2/reports";
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .json(report);
        let req = match &self.auth {
            Some(ClientAuth::Basic { user, password }) => req.basic_auth(user, Some(password)),
            Some(ClientAuth::Bearer(token)) => req.bearer_auth(token),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| SourceError::Unavailable(e.without_url().to_string()))?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => Err(SourceError::Unauthorized(format!("{path}: 401"))),
            code => {
                let body = resp.text().await.unwrap_or_default();
                let body: String = body.chars().take(200).collect();
                Err(SourceError::Unavailable(format!("{path}: {code} {body}")))
            }
        }
    }
}

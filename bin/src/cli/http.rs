//! One call to the manager: the request a command builds, sending it, and what came back.

use std::time::Duration;

use nebula_http::client::ClientAuth;
use reqwest::{Method, Url};
use serde_json::Value;

/// How a reply is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `{"<key>": [names]}`: a one-column table.
    Names(&'static str),
    /// A page of worker reports (`{"data": [...], "last_id": ...}`).
    Reports,
    /// One object: pretty JSON.
    Object,
    /// A command whose reply says nothing more than its success (`{}`): this line instead.
    Done(String),
    /// `GET /status`.
    Ping,
}

/// A request to the v2 API, before the manager's address and credentials are known.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The HTTP method.
    pub method: Method,
    /// The path segments after `/api/v2` (each percent-encoded when sent).
    pub path: Vec<String>,
    /// Query parameters.
    pub query: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Option<Value>,
    /// How the reply is shown.
    pub shape: Shape,
}

impl Request {
    /// A request without body or query.
    #[must_use]
    pub fn new(method: Method, path: &[&str], shape: Shape) -> Self {
        Self {
            method,
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
            shape,
        }
    }

    /// The same request with `body`.
    #[must_use]
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// The full URL under `base` (`http://host:port[/prefix]`).
    ///
    /// # Errors
    /// When `base` is not a URL that can hold a path.
    pub fn url(&self, base: &Url) -> Result<Url, String> {
        let mut url = base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| "cannot hold a path".to_owned())?;
            segments.pop_if_empty().extend(["api", "v2"]);
            segments.extend(&self.path);
        }
        if !self.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(self.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }
}

/// A manager address as it may be shown: without any user or password it holds.
#[must_use]
pub fn shown(base: &Url) -> String {
    let mut url = base.clone();
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string().trim_end_matches('/').to_owned()
}

/// What a call came to.
#[derive(Debug)]
pub enum Outcome {
    /// A 2xx reply and its body (Null when empty).
    Ok(Value),
    /// The manager refused: its status line and body as sent.
    Refused {
        /// e.g. `400 Bad Request`.
        status: String,
        /// The body (compact JSON, or the text when it is not JSON).
        body: String,
    },
    /// The manager could not be reached, or its reply could not be read.
    Unreachable(String),
}

/// Sends `req` to the manager at `base`.
pub async fn send(
    base: &Url,
    auth: Option<&ClientAuth>,
    ca: Option<&[u8]>,
    timeout: Duration,
    req: &Request,
) -> Outcome {
    let url = match req.url(base) {
        Ok(u) => u,
        Err(e) => return Outcome::Unreachable(e),
    };
    let builder = match nebula_http::client::client_builder(ca) {
        Ok(b) => b,
        Err(e) => return Outcome::Unreachable(format!("TLS: {e}")),
    };
    let client = match builder
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Unreachable(reason(&e)),
    };
    let mut builder = client.request(req.method.clone(), url);
    builder = match auth {
        Some(ClientAuth::Basic { user, password }) => builder.basic_auth(user, Some(password)),
        Some(ClientAuth::Bearer(token)) => builder.bearer_auth(token),
        None => builder,
    };
    if let Some(body) = &req.body {
        builder = builder.json(body);
    }
    let resp = match builder.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Unreachable(reason(&e)),
    };
    let status = resp.status();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Unreachable(reason(&e)),
    };
    let parsed: Option<Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
        Some(Value::Null)
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    if status.is_success() {
        match parsed {
            Some(v) => Outcome::Ok(v),
            None => Outcome::Unreachable(format!("the reply to {} is not JSON", req.method)),
        }
    } else {
        let body = parsed.map_or_else(
            || {
                let text = String::from_utf8_lossy(&bytes);
                text.chars().take(500).collect::<String>().trim().to_owned()
            },
            |v| v.to_string(),
        );
        Outcome::Refused {
            status: status.to_string(),
            body,
        }
    }
}

/// An error and its causes, without the URL (which may hold credentials).
fn reason(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        String::new()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        // hyper's "client error (Connect)" says less than its causes.
        if !part.is_empty() && !part.starts_with("client error") && !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = s.source();
    }
    if text.is_empty() {
        text = e.to_string();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_names_and_keep_a_prefix() {
        let base = Url::parse("http://127.0.0.1:8080").unwrap();
        let req = Request::new(Method::GET, &["apps", "a b/c"], Shape::Object);
        assert_eq!(
            req.url(&base).unwrap().as_str(),
            "http://127.0.0.1:8080/api/v2/apps/a%20b%2Fc"
        );
        let base = Url::parse("http://h:1/nebula/").unwrap();
        let mut req = Request::new(Method::GET, &["reports"], Shape::Reports);
        req.query = vec![("hostname", "h&1".into()), ("page_size", "3".into())];
        assert_eq!(
            req.url(&base).unwrap().as_str(),
            "http://h:1/nebula/api/v2/reports?hostname=h%261&page_size=3"
        );
    }

    #[test]
    fn a_shown_address_holds_no_credentials() {
        let base = Url::parse("http://admin:secret@h:8080/").unwrap();
        assert_eq!(shown(&base), "http://h:8080");
    }
}

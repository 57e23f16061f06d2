//! Docker image references: `[registry[:port]/]path[:tag][@sha256:digest]`.

use std::fmt;

/// A parsed image reference. Unlike the original, no registry is invented: a bare `nginx`
/// stays `nginx:latest` and the engine resolves it; digests are supported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// `localhost:5000`, `ghcr.io`, ...; absent for the engine's default registry.
    pub registry: Option<String>,
    /// `library/nginx`, `team/app`, ...
    pub repository: String,
    /// The tag, if given.
    pub tag: Option<String>,
    /// The `sha256:...` digest, if given.
    pub digest: Option<String>,
}

fn component_ok(c: &str) -> bool {
    // [a-z0-9]+ separated by one of: "." "_" "__" or runs of "-"
    if c.is_empty() || !c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit()) {
        return false;
    }
    if !c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit()) {
        return false;
    }
    let bytes = c.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        let sep_len = match b {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|x| **x == b'-').count(),
            _ => return false,
        };
        i += sep_len;
        match bytes.get(i) {
            Some(n) if n.is_ascii_lowercase() || n.is_ascii_digit() => {}
            _ => return false,
        }
    }
    true
}

fn registry_ok(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
}

impl ImageRef {
    /// Parses a reference.
    ///
    /// # Errors
    /// The rule broken, as text.
    pub fn parse(image: &str) -> Result<Self, String> {
        const RULE: &str = "must be [registry/]name[:tag][@sha256:digest] with a lower-case name";
        if image.is_empty() || image.len() > 255 {
            return Err("must be 1 to 255 characters".into());
        }
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| format!("digest {RULE}"))?;
                if hex.len() != 64
                    || !hex
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
                {
                    return Err(
                        "digest must be sha256: followed by 64 lower-case hex digits".into(),
                    );
                }
                (rest, Some(digest.to_owned()))
            }
            None => (image, None),
        };
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err("tag must be 1 to 128 characters of A-Z a-z 0-9 _ . - ".into());
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            let r = parts.remove(0);
            if !registry_ok(r) {
                return Err(format!("registry {r:?} must be host[:port]"));
            }
            Some(r.to_owned())
        } else {
            None
        };
        if parts.iter().any(|c| !component_ok(c)) {
            return Err(RULE.into());
        }
        Ok(Self {
            registry,
            repository: parts.join("/"),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The reference to pull and run: with `:latest` added when neither tag nor digest is given.
    #[must_use]
    pub fn canonical(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        f.write_str(&self.repository)?;
        match (&self.tag, &self.digest) {
            (Some(t), _) => write!(f, ":{t}")?,
            (None, None) => f.write_str(":latest")?,
            (None, Some(_)) => {}
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(
            (
                r.registry.as_deref(),
                r.repository.as_str(),
                r.tag.as_deref()
            ),
            (None, "nginx", None)
        );
        assert_eq!(r.canonical(), "nginx:latest");
        let r = ImageRef::parse("127.0.0.1:5000/team/site:v1.2").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository, "team/site");
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.canonical(), format!("localhost/x@{d}"));
        assert_eq!(
            ImageRef::parse("a/b__c-d:1").unwrap().repository,
            "a/b__c-d"
        );
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "UP",
            "a//b",
            "a:",
            "a@sha256:12",
            "-a",
            "a_",
            "a b",
            "host:99999/a",
            ":tag",
            "a:t@g",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}

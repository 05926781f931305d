//! The browser client, embedded at build time from `web/app/` (see `build.rs`) and served under `/app/`.
//!
//! The page verifies the pod's attestation itself, against a root and a PCR file the *user* supplies (or the AWS
//! root embedded in the page's code), so that a parent which answers the API cannot vouch for itself. The page's
//! code does come from this parent, which is the limit of any web application: the threat model says what that
//! means and how an organisation can serve the same files from an origin it controls instead.

mod files {
    include!(concat!(env!("OUT_DIR"), "/web_app.rs"));
}

/// The file at `path` (relative to `/app/`; empty means `index.html`) and its content type.
pub fn get(path: &str) -> Option<(&'static [u8], &'static str)> {
    let path = if path.is_empty() { "index.html" } else { path };
    let (_, bytes) = files::FILES.iter().find(|(p, _)| *p == path)?;
    let ext = path.rsplit('.').next().unwrap_or_default();
    let content_type = match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "pem" => "application/x-pem-file",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    };
    Some((bytes, content_type))
}

/// Every embedded path.
#[cfg(test)]
fn paths() -> impl Iterator<Item = &'static str> {
    files::FILES.iter().map(|(p, _)| *p)
}

/// The Content-Security-Policy of the client's pages: only this origin's scripts, styles and API; no inline
/// script, no framing, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_is_embedded() {
        assert!(super::get("").is_some(), "web/app/index.html is embedded");
        assert!(super::get("lib/attest.js").is_some());
        assert_eq!(
            super::get("lib/cbor.js").map(|(_, t)| t),
            Some("text/javascript; charset=utf-8")
        );
        assert!(super::get("../Cargo.toml").is_none());
        assert!(super::paths().all(|p| !p.contains("..")));
    }
}

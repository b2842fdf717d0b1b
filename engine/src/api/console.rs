//! The web console at `/ui/`: static assets embedded in the binary (from `console/app`), served
//! without a token — they hold no data; every datum the console shows comes from the API with
//! the token the user logs in with. Strict headers: a content security policy that allows only
//! this origin (no inline script, no CDN), no framing, no referrer, no MIME sniffing.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The console's files.
#[derive(rust_embed::Embed)]
#[folder = "../console/app"]
struct Assets;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

/// The asset at `path` (`""` is `index.html`), with an ETag; 304 when the client has it.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such console file")
            .into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    let mut response = if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type(path))], file.data.into_owned()).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a valid header value"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Routes `/ui`, `/ui/` and `/ui/{file}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { asset("", &headers) }))
        .route("/ui/{*path}", get(|Path(path): Path<String>, headers: HeaderMap| async move { asset(&path, &headers) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_console_file_is_embedded_with_its_type() {
        let names: Vec<String> = Assets::iter().map(|n| n.to_string()).collect();
        for required in ["index.html", "app.js", "style.css", "vendor/htm-preact.js"] {
            assert!(names.iter().any(|n| n == required), "{required} missing from {names:?}");
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../console/app");
        let mut on_disk = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    on_disk.push(p.strip_prefix(&dir).unwrap().to_string_lossy().to_string());
                }
            }
        }
        on_disk.sort();
        let mut embedded = names.clone();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
    }

    #[test]
    fn assets_carry_strict_headers_and_revalidate() {
        let r = asset("", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
        let etag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(asset("", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(asset("../Cargo.toml", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
        assert_eq!(asset("nope.js", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
    }
}

//! The web console for the collections desk (CONTRACT.md "Console"): `GET /` and `/console/...`.
//!
//! The files are built into the binary from `console/` (no CDN, nothing to install beside the
//! daemon). They hold no data, so they need no token; every data call the page makes goes to the
//! `/v1` API with the token the officer types in. Every answer carries a strict
//! Content-Security-Policy: scripts and styles only from files served here, connections only to
//! this address, images from here and the configured tile host.

use crate::config::{ConsoleConfig, TileCrs};
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One embedded file: its path under `/console/`, its content type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $ct:expr) => {
        Asset {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const PNG: &str = "image/png";
const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.css", CSS),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/i18n.js", JS),
    asset!("js/gcj02.js", JS),
    asset!("js/map.js", JS),
    asset!("js/signin.js", JS),
    asset!("js/queue.js", JS),
    asset!("js/vehicle.js", JS),
    asset!("js/alerts.js", JS),
    asset!("js/zones.js", JS),
    asset!("js/zone.js", JS),
    asset!("vendor/leaflet/leaflet.js", JS),
    asset!("vendor/leaflet/leaflet.css", CSS),
    asset!("vendor/leaflet/LICENSE", TEXT),
    asset!("vendor/leaflet/images/marker-icon.png", PNG),
    asset!("vendor/leaflet/images/marker-icon-2x.png", PNG),
    asset!("vendor/leaflet/images/marker-shadow.png", PNG),
    asset!("vendor/leaflet/images/layers.png", PNG),
    asset!("vendor/leaflet/images/layers-2x.png", PNG),
];

/// What every answer of the console carries, prepared once.
struct Prepared {
    csp: HeaderValue,
    console: ConsoleConfig,
    /// `rules.timezone`, which a reload may change.
    timezone: ConsoleZone,
    etags: Vec<HeaderValue>,
}

/// The zone the console shows times and days in: `rules.timezone`, shared with the reload.
pub type ConsoleZone = Arc<std::sync::RwLock<String>>;

/// The routes of the console; no token is needed for them (they hold no data).
pub fn router<S: Clone + Send + Sync + 'static>(
    cfg: &ConsoleConfig,
    timezone: ConsoleZone,
) -> Router<S> {
    let p = Arc::new(Prepared {
        csp: csp(cfg),
        console: cfg.clone(),
        timezone,
        etags: ASSETS.iter().map(|a| etag(a.body)).collect(),
    });
    let (index, file, conf) = (p.clone(), p.clone(), p);
    Router::new()
        .route(
            "/",
            get(move |h: HeaderMap| async move { serve(&index, "index.html", &h) }),
        )
        .route(
            "/console/",
            get(|| async { axum::response::Redirect::permanent("/") }),
        )
        .route(
            "/console/config.json",
            get(move || async move {
                let mut r = (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    config_json(
                        &conf.console,
                        &conf.timezone.read().map(|z| z.clone()).unwrap_or_default(),
                    ),
                )
                    .into_response();
                secure(&mut r, &conf.csp);
                r
            }),
        )
        .route(
            "/console/{*path}",
            get(move |Path(path): Path<String>, h: HeaderMap| async move {
                serve(&file, &path, &h)
            }),
        )
}

/// `default-src 'self'` and nothing inline; images also from the tile host.
fn csp(cfg: &ConsoleConfig) -> HeaderValue {
    let tiles = cfg
        .tile_origin()
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    let v = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:{tiles}; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    );
    // The tile origin was checked for header-safe characters when the config was read.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
}

/// What the page needs to know of the config: the map background and the zone its times and
/// days are in (`rules.timezone`, as for places), never a secret.
fn config_json(cfg: &ConsoleConfig, timezone: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "timezone": timezone,
        "tile_url": cfg.tile_url,
        "tile_crs": match cfg.tile_crs {
            TileCrs::Wgs84 => "wgs84",
            TileCrs::Gcj02 => "gcj02",
        },
        "tile_attribution": cfg.attribution(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .unwrap_or_default()
}

fn etag(body: &[u8]) -> HeaderValue {
    let h = Sha256::digest(body);
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&h[..12])))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// An embedded file, revalidated on every use (`no-cache` with an ETag): the names carry no
/// version, and an upgraded daemon must never run with yesterday's scripts.
fn serve(p: &Prepared, path: &str, h: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        let mut r = (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response();
        secure(&mut r, &p.csp);
        return r;
    };
    let (a, tag) = (&ASSETS[i], &p.etags[i]);
    let fresh = h
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes());
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
    };
    let hs = r.headers_mut();
    hs.insert(header::ETAG, tag.clone());
    hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(&mut r, &p.csp);
    r
}

fn secure(r: &mut Response, csp: &HeaderValue) {
    let hs = r.headers_mut();
    hs.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    hs.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    hs.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Tile servers (OpenStreetMap's among them) want to know the site that shows their tiles:
    // the origin only. The token is never in a URL, and the vehicle in the fragment is never sent.
    hs.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `console/` is served (a file added there and forgotten in the table
    /// would be a broken page), with a type that matches its name.
    #[test]
    fn every_console_file_is_embedded_with_its_type() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    // Provenance notes for the vendored files are for people, not the page.
                    if !rel.ends_with("SOURCE") {
                        on_disk.push(rel);
                    }
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        for a in ASSETS {
            let want = match a.path.rsplit('.').next() {
                Some("js") => JS,
                Some("css") => CSS,
                Some("png") => PNG,
                Some("html") => HTML,
                _ => TEXT,
            };
            assert_eq!(a.content_type, want, "{}", a.path);
        }
    }

    /// The vendored Leaflet files are the published release, byte for byte (their SHA-256 as
    /// recorded in `console/vendor/leaflet/SOURCE` when they were copied from the npm package).
    #[test]
    fn vendored_leaflet_is_unmodified() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console/vendor/leaflet");
        let source = std::fs::read_to_string(root.join("SOURCE")).unwrap();
        let mut checked = 0;
        for line in source.lines() {
            let mut parts = line.split_whitespace();
            let (Some(sum), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let a = ASSETS
                .iter()
                .find(|a| a.path == format!("vendor/leaflet/{file}"))
                .unwrap_or_else(|| panic!("{file} is not embedded"));
            assert_eq!(hex::encode(Sha256::digest(a.body)), sum, "{file}");
            checked += 1;
        }
        assert_eq!(checked, 8, "every vendored file has its checksum");
    }

    #[test]
    fn csp_names_the_tile_host_and_forbids_inline_code() {
        let c = ConsoleConfig::default();
        let v = csp(&c);
        let v = v.to_str().unwrap();
        assert!(v.contains("default-src 'self'"), "{v}");
        assert!(
            v.contains("img-src 'self' data: https://tile.openstreetmap.org;"),
            "{v}"
        );
        assert!(v.contains("connect-src 'self'"), "{v}");
        assert!(v.contains("frame-ancestors 'none'"), "{v}");
        assert!(!v.contains("unsafe"), "{v}");
        let none = ConsoleConfig {
            tile_url: String::new(),
            ..ConsoleConfig::default()
        };
        assert!(csp(&none)
            .to_str()
            .unwrap()
            .contains("img-src 'self' data:;"));
        let j: serde_json::Value =
            serde_json::from_slice(&config_json(&none, "Asia/Shanghai")).unwrap();
        assert_eq!(j["tile_url"], "");
        assert_eq!(j["tile_crs"], "wgs84");
        assert_eq!(j["timezone"], "Asia/Shanghai");
    }
}

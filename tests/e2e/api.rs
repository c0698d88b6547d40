//! The API as an integrator meets it: its OpenAPI description, the vehicle list, and metrics that
//! exist from the first second (CONTRACT.md "API description and metrics").

use crate::common::receiver::Receiver;
use crate::common::*;
use serde_json::json;

/// Every family the README's metrics table lists, except the MQTT ones (present with `[mqtt]`).
fn readme_families() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let names: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `lienwatch_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("lienwatch_{n}"))
        .filter(|n| !n.starts_with("lienwatch_mqtt_"))
        .collect();
    assert!(names.len() >= 20, "the README lists the metrics: {names:?}");
    names
}

#[test]
fn every_metric_family_the_readme_lists_is_exported_from_the_start() {
    let rx = Receiver::start();
    let d = Daemon::start(
        &["gt06", "jt808"],
        &format!(
            "[[webhook]]\nurl = \"{}\"\nsecret = \"s3cret-0123\"\n",
            rx.url()
        ),
    );
    let text = d.scrape();
    let missing: Vec<String> = readme_families()
        .into_iter()
        .filter(|n| !text.lines().any(|l| l.starts_with(n.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "not on /metrics at start: {missing:?}\n{text}"
    );
    // Zero until something happens, per listener and per webhook.
    assert_eq!(
        d.metric("lienwatch_frames_decoded_total", &[("protocol", "jt808")]),
        0.0
    );
    assert_eq!(
        d.metric(
            "lienwatch_webhook_attempts_total",
            &[("outcome", "delivered")]
        ),
        0.0
    );
}

#[test]
fn openapi_describes_every_v1_route_without_a_token() {
    let d = Daemon::start(&["gt06"], "");
    let (status, text) = http(d.admin, "GET", "/v1/openapi.json", None, None).expect("openapi");
    assert_eq!(status, 200, "{text}");
    let spec: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert!(spec["openapi"].as_str().unwrap_or("").starts_with("3."));
    for p in [
        "/v1/vehicles",
        "/v1/vehicles/{id}",
        "/v1/loans/{id}",
        "/v1/devices/{id}",
        "/v1/devices/{id}/registration",
        "/v1/alerts",
    ] {
        assert!(spec["paths"][p].is_object(), "{p} missing");
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
}

#[test]
fn vehicles_are_listed_in_pages_with_a_cursor() {
    let d = Daemon::start(&["gt06"], "");
    for i in 0..5 {
        let body = json!({
            "plate": format!("粤B1234{i}"),
            "loan": {"id": format!("L-{i}"), "status": "current"},
            "devices": [{"id": format!("86812014523360{i}")}]
        });
        let (s, v) = d.api(
            "PUT",
            &format!("/v1/vehicles/V-{i}"),
            Some(&body.to_string()),
        );
        assert_eq!(s, 201, "{v}");
    }
    let mut seen = Vec::new();
    let mut path = "/v1/vehicles?limit=2".to_string();
    loop {
        let (s, page) = d.api("GET", &path, None);
        assert_eq!(s, 200, "{page}");
        let items = page["vehicles"].as_array().expect("vehicles").clone();
        assert!(items.len() <= 2);
        for v in &items {
            seen.push(v["vehicle_id"].as_str().unwrap().to_string());
            assert!(v["loan"]["id"].is_string(), "{v}");
        }
        match page["next"].as_str() {
            Some(cursor) => path = format!("/v1/vehicles?limit=2&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["V-0", "V-1", "V-2", "V-3", "V-4"]);
    // A bad request is a 4xx and names what was wrong.
    let (s, v) = d.api("GET", "/v1/vehicles?limit=0", None);
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.api("GET", "/v1/vehicles?colour=red", None);
    assert_eq!(s, 400, "{v}");
    let (s, _) = http(d.admin, "GET", "/v1/vehicles", None, None).expect("http");
    assert_eq!(s, 401, "the list needs the token");
}

/// Every `/v1/...` request needs the token, even for a path that does not exist, and every
/// refusal is `{"error": ...}`: also those axum makes itself (a method the path does not take,
/// a query it cannot read).
#[test]
fn refusals_are_json_and_unknown_v1_paths_need_the_token() {
    let d = Daemon::start(&["gt06"], "");
    let (s, body) = http(d.admin, "GET", "/v1/no-such-thing", None, None).unwrap();
    assert_eq!(s, 401, "{body}");
    let json = |body: &str| -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    };
    assert!(json(&body)["error"].is_string(), "{body}");
    let (s, v) = d.api("GET", "/v1/no-such-thing", None);
    assert_eq!(s, 404, "{v}");
    assert!(v["error"].is_string(), "{v}");
    for (method, path) in [("DELETE", "/v1/alerts"), ("GET", "/v1/alerts?limit=many")] {
        let (s, body) = http(d.admin, method, path, None, Some(TOKEN)).unwrap();
        assert!((400..500).contains(&s), "{method} {path}: {s} {body}");
        let v = json(&body);
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {body}"
        );
    }
    // A refusal made by axum is counted with the API's own.
    assert!(
        d.metric("lienwatch_admin_rejected_total", &[("status", "405")]) >= 1.0,
        "405 counted"
    );
}

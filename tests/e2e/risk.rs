//! The risk score and the collections queue over real sockets (CONTRACT.md "Risk tier and the
//! collections queue"): events and loan changes move each vehicle's score, a tier that goes up
//! is delivered as `risk_tier_changed`, and `GET /v1/vehicles` pages the queue by score.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

const C_IMEI: &str = "868120145277003";

fn vehicle(loan: serde_json::Value, device: &str, fenced: bool) -> String {
    let mut v = json!({"loan": loan, "devices": [{"id": device, "kind": "wired"}]});
    if fenced {
        v["geofence"] =
            json!({"type": "Circle", "center": [114.057865, 22.543096], "radius_m": 1000});
    }
    v.to_string()
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v["vehicles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["vehicle_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_queue_follows_events_and_loan_changes_and_a_higher_tier_is_delivered() {
    let rx = receiver::Receiver::start();
    let d = Daemon::start(
        &["gt06"],
        &format!(
            "[[webhook]]\nurl = \"{}\"\nsecret = \"risk-secret-0123\"\ntypes = [\"risk_tier_changed\"]\n",
            rx.url()
        ),
    );
    let put = |id: &str, body: String| {
        assert_eq!(
            d.api("PUT", &format!("/v1/vehicles/{id}"), Some(&body)).0,
            201
        )
    };
    put(
        "A",
        vehicle(
            json!({"id": "L-A", "status": "overdue", "days_past_due": 100}),
            "868120145277001",
            false,
        ),
    );
    put(
        "B",
        vehicle(
            json!({"id": "L-B", "status": "current"}),
            "868120145277002",
            false,
        ),
    );
    put(
        "C",
        vehicle(
            json!({"id": "L-C", "status": "overdue", "days_past_due": 10}),
            C_IMEI,
            true,
        ),
    );
    put(
        "D",
        vehicle(
            json!({"id": "L-D", "status": "closed"}),
            "868120145277004",
            false,
        ),
    );

    // C's tracker reports 6 km outside its fence: outside_geofence joins its overdue band.
    let mut dev = d.connect("gt06");
    dev.exchange_bytes(&gt06_login(C_IMEI, 1), &gt06_ack(0x01, 1));
    dev.exchange_bytes(
        &gt06_location(2, (24, 5, 20, 10, 0, 0), 22.6, 114.057865),
        &gt06_ack(0x12, 2),
    );
    let got = rx.wait_for(Duration::from_secs(5), "C goes up", |a| !a.is_empty());
    let a = got[0].json();
    assert_eq!(a["type"], "risk_tier_changed");
    assert_eq!(a["vehicle_id"], "C");
    assert_eq!(a["details"]["from"], "low");
    assert_eq!(a["details"]["to"], "medium");
    assert_eq!(a["details"]["score"], 30);

    // B's loan turns overdue by 45 days: none -> medium.
    let (s, _) = d.api(
        "PUT",
        "/v1/loans/L-B",
        Some(r#"{"status": "overdue", "days_past_due": 45}"#),
    );
    assert_eq!(s, 200);
    let got = rx.wait_for(Duration::from_secs(5), "B goes up", |a| a.len() >= 2);
    assert_eq!(got[1].json()["vehicle_id"], "B");
    assert_eq!(got[1].json()["details"]["to"], "medium");

    let (_, c) = d.api("GET", "/v1/vehicles/C", None);
    assert_eq!(c["risk"]["tier"], "medium", "{c}");
    assert_eq!(c["risk"]["score"], 30);
    let codes: Vec<&str> = c["risk"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["outside_geofence", "overdue_1_30"]);

    // The queue: A (40), then B and C (30 each: B never heard from is the longest silent), D.
    let (s, all) = d.api("GET", "/v1/vehicles", None);
    assert_eq!(s, 200, "{all}");
    assert_eq!(ids(&all), ["A", "B", "C", "D"]);
    assert_eq!(all["vehicles"][0]["risk"]["score"], 40);
    assert_eq!(all["vehicles"][3]["risk"]["tier"], "none");
    assert!(all["next"].is_null());
    // Filters, and a stable cursor through a filtered queue.
    let (_, p1) = d.api(
        "GET",
        "/v1/vehicles?tier=medium&loan_status=overdue&limit=2",
        None,
    );
    assert_eq!(ids(&p1), ["A", "B"]);
    let next = p1["next"].as_str().expect("a next page").to_string();
    let (_, p2) = d.api(
        "GET",
        &format!("/v1/vehicles?tier=medium&loan_status=overdue&limit=2&after={next}"),
        None,
    );
    assert_eq!(ids(&p2), ["C"]);
    assert!(p2["next"].is_null());
    let (_, high) = d.api("GET", "/v1/vehicles?tier=high", None);
    assert!(ids(&high).is_empty());
    let (_, closed) = d.api("GET", "/v1/vehicles?loan_status=closed", None);
    assert_eq!(ids(&closed), ["D"]);
    // Each 400 names the parameter at fault.
    for (bad, named) in [
        ("tier=urgent", "tier"),
        ("loan_status=late", "loan_status"),
        ("after=nonsense", "after"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("status=overdue", "status"),
    ] {
        let (s, v) = d.api("GET", &format!("/v1/vehicles?{bad}"), None);
        assert_eq!(s, 400, "{bad}: {v}");
        let why = v["error"].as_str().unwrap_or_default();
        assert!(why.contains(named), "{bad}: {v}");
    }

    // A tier going down raises nothing: C's fix comes back inside.
    dev.exchange_bytes(
        &gt06_location(3, (24, 5, 20, 10, 1, 0), 22.543096, 114.057865),
        &gt06_ack(0x12, 3),
    );
    let (_, c) = d.api("GET", "/v1/vehicles/C", None);
    assert_eq!(c["risk"]["tier"], "low", "{c}");
    assert_eq!(rx.of_type("risk_tier_changed").len(), 2);
}

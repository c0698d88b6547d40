//! `GET /v1/openapi.json`: the API described from the handlers' own types (utoipa), so the
//! description cannot drift from the code.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lienwatch admin API",
        description = "Registry, positions and alerts of lienwatch, the collateral tracking daemon. Every /v1 route but this description needs `Authorization: Bearer <token>`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "vehicles", description = "the collateral registry"),
        (name = "loans", description = "loan status from the lender's system"),
        (name = "devices", description = "trackers and their last-known positions"),
        (name = "alerts", description = "alerts and their webhook delivery"),
        (name = "commands", description = "commands to devices: locate now, tracking mode, raw text"),
        (name = "zones", description = "risk zones shared by every vehicle")
    )
)]
struct Base;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(super) fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

/// The whole description: every `/v1` route with its parameters, bodies and answers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = super::v1().split_for_parts();
    api
}

#[cfg(test)]
mod tests {
    /// The description is valid OpenAPI 3.1 (parsed by an independent model, `oas3`) and names
    /// every `/v1` route with its methods.
    #[test]
    fn describes_every_route_and_parses_as_openapi() {
        let text = serde_json::to_string(&super::openapi()).unwrap();
        let spec: oas3::OpenApiV3Spec = oas3::from_json(&text).expect("valid OpenAPI 3.1");
        assert!(spec.openapi.starts_with("3."), "{}", spec.openapi);
        let paths = spec.paths.clone().expect("paths");
        let want: &[(&str, &[&str])] = &[
            ("/v1/vehicles", &["get"]),
            ("/v1/vehicles/{id}", &["get", "put", "delete"]),
            ("/v1/loans/{id}", &["put"]),
            ("/v1/devices/{id}", &["get"]),
            ("/v1/devices/{id}/registration", &["delete"]),
            ("/v1/devices/{id}/track", &["get"]),
            ("/v1/vehicles/{id}/places", &["get"]),
            ("/v1/devices/{id}/commands", &["get", "post"]),
            ("/v1/commands/{id}", &["get"]),
            ("/v1/alerts", &["get"]),
            ("/v1/zones", &["get", "post"]),
            ("/v1/zones/{id}", &["get", "put", "delete"]),
        ];
        for (path, methods) in want {
            let item = paths.get(*path).unwrap_or_else(|| panic!("{path} missing"));
            for m in *methods {
                let op = match *m {
                    "get" => item.get.as_ref(),
                    "put" => item.put.as_ref(),
                    "delete" => item.delete.as_ref(),
                    "post" => item.post.as_ref(),
                    _ => None,
                };
                let op = op.unwrap_or_else(|| panic!("{m} {path} missing"));
                assert!(
                    !op.responses(&spec).is_empty(),
                    "{m} {path} has no responses"
                );
            }
        }
        assert_eq!(
            paths.len(),
            want.len(),
            "unexpected routes: {:?}",
            paths.keys()
        );
        let schemes = &spec
            .components
            .clone()
            .expect("components")
            .security_schemes;
        assert!(schemes.contains_key("bearer"));
    }

    /// Parameters the handlers take as text, to give their own 400s, are described by what
    /// they hold: generated clients send numbers and times.
    #[test]
    fn text_parameters_are_described_by_what_they_hold() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let param = |path: &str, name: &str| {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
                .unwrap_or_else(|| panic!("{path} {name}"))
        };
        let track = "/v1/devices/{id}/track";
        assert_eq!(param(track, "limit")["schema"]["type"], "integer");
        assert_eq!(param(track, "from")["schema"]["format"], "date-time");
        assert_eq!(param(track, "to")["schema"]["format"], "date-time");
        let days = param("/v1/vehicles/{id}/places", "days");
        assert_eq!(days["schema"]["type"], "integer", "{days}");
    }
}

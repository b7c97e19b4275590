//! The server's API paths, and the one matcher the server routes with.
//!
//! Every endpoint has a constant (or a function for paths that name a class
//! or a log) used by clients to build requests, and a [`Route`] variant the
//! server's router matches on: [`Route::resolve`] turns a method and a raw
//! request path into a route, or says whether the path is known under
//! another method (405) or not at all (404).
//!
//! Matching is on the raw path, split at `/` after any leading slashes:
//! nothing is percent-decoded, and `.`/`..` segments mean nothing special.
//! A `{class}` or `{log_id}` segment is handed over exactly as sent (it
//! may be empty or hold `%`); the endpoint refuses names it does not serve.

/// `POST`: the native sign endpoint.
pub const PATH_SIGN: &str = "/v1/sign";
/// `POST`: revoke a certificate.
pub const PATH_REVOKE: &str = "/v1/revoke";
/// Prefix of the OCSP responder: `/ocsp/{class}` (POST) and
/// `/ocsp/{class}/{base64 request}` (GET, RFC 6960 appendix A.1).
pub const PATH_OCSP: &str = "/ocsp";
/// `GET`: the class list.
pub const PATH_CLASSES: &str = "/v1/classes";
/// Prefix of the issuance log's read API: `/v1/log/{log_id}/…`.
pub const PATH_LOG: &str = "/v1/log";
/// Prefix of every CFSSL-compatible endpoint (their errors use CFSSL's
/// envelope).
pub const CFSSL_PREFIX: &str = "/api/v1/cfssl/";
/// `POST`: CFSSL `authsign`.
pub const PATH_CFSSL_AUTHSIGN: &str = crate::cfssl::PATH_AUTHSIGN;
/// `POST`: CFSSL `info`.
pub const PATH_CFSSL_INFO: &str = crate::cfssl::PATH_INFO;
/// `GET`: Prometheus metrics.
pub const PATH_METRICS: &str = "/metrics";
/// `GET`: liveness.
pub const PATH_HEALTHZ: &str = "/healthz";
/// `GET`: readiness (log writable, HSM reachable).
pub const PATH_READYZ: &str = "/readyz";
/// The read-only web console: `/ui/` and the pages under it.
pub const PATH_UI: &str = "/ui/";

/// Path of a class's trust bundle (PEM of the class root(s)).
pub fn class_bundle_path(class: &str) -> String {
    format!("{PATH_CLASSES}/{class}/bundle")
}

/// Path of a class's current chain (PEM of the active intermediate).
pub fn class_chain_path(class: &str) -> String {
    format!("{PATH_CLASSES}/{class}/chain")
}

/// Path of a class's CRL: the active intermediate's (DER; `?format=pem`
/// gives every current CRL of the class in one PEM file).
pub fn class_crl_path(class: &str) -> String {
    format!("{PATH_CLASSES}/{class}/crl")
}

/// Path of the CRL of one intermediate of a class (by its key label), DER.
pub fn class_crl_of_path(class: &str, key: &str) -> String {
    format!("{PATH_CLASSES}/{class}/crl/{key}")
}

/// Path of a class's OCSP responder (POST).
pub fn ocsp_path(class: &str) -> String {
    format!("{PATH_OCSP}/{class}")
}

/// Path of one resource of the issuance log `log_id`.
pub fn log_path(log_id: &str, resource: LogResource) -> String {
    format!("{PATH_LOG}/{log_id}/{}", resource.as_str())
}

/// Path of the inventory search of the issuance log `log_id`
/// (`?name=…&serial=…&…`).
pub fn log_search_path(log_id: &str) -> String {
    format!("{PATH_LOG}/{log_id}/search")
}

/// What `GET /v1/log/{log_id}/…` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogResource {
    /// `sth`: the latest signed tree head (public).
    Sth,
    /// `key`: the log's public key, PEM (public).
    Key,
    /// `entries?start=A&end=B`: a page of entries.
    Entries,
    /// `proof?seq=N`: the inclusion proof of one entry.
    Proof,
}

impl LogResource {
    /// Every resource, in path order of the documentation.
    pub const ALL: [LogResource; 4] = [
        LogResource::Sth,
        LogResource::Key,
        LogResource::Entries,
        LogResource::Proof,
    ];

    /// The path segment.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogResource::Sth => "sth",
            LogResource::Key => "key",
            LogResource::Entries => "entries",
            LogResource::Proof => "proof",
        }
    }

    /// The resource a path segment names, if any.
    pub fn from_segment(segment: &str) -> Option<LogResource> {
        LogResource::ALL.into_iter().find(|r| r.as_str() == segment)
    }
}

/// One endpoint of the server, with the names its path carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route<'a> {
    /// `POST /v1/sign`.
    Sign,
    /// `GET /v1/classes`.
    Classes,
    /// `GET /v1/classes/{class}/bundle`.
    ClassBundle {
        /// The class segment, as sent.
        class: &'a str,
    },
    /// `GET /v1/classes/{class}/chain`.
    ClassChain {
        /// The class segment, as sent.
        class: &'a str,
    },
    /// `POST /v1/revoke`.
    Revoke,
    /// `GET /v1/classes/{class}/crl`.
    ClassCrl {
        /// The class segment, as sent.
        class: &'a str,
    },
    /// `GET /v1/classes/{class}/crl/{key}`: one intermediate's CRL.
    ClassCrlOf {
        /// The class segment, as sent.
        class: &'a str,
        /// The intermediate's key label, as sent.
        key: &'a str,
    },
    /// `POST /ocsp/{class}` (body: DER OCSPRequest).
    OcspPost {
        /// The class segment, as sent.
        class: &'a str,
    },
    /// `GET /ocsp/{class}/{request}`: the rest of the path after the class
    /// (URL-encoded base64, which may itself hold `/`).
    OcspGet {
        /// The class segment, as sent.
        class: &'a str,
        /// Everything after `/ocsp/{class}/`, as sent.
        request: &'a str,
    },
    /// `GET /v1/log/{log_id}/{sth|key|entries|proof}`.
    Log {
        /// The log id segment, as sent.
        log_id: &'a str,
        /// Which resource of the log.
        resource: LogResource,
    },
    /// `GET /v1/log/{log_id}/search`: the inventory's search.
    LogSearch {
        /// The log id segment, as sent.
        log_id: &'a str,
    },
    /// `GET /ui` and everything under `/ui/`: the web console.
    Ui {
        /// The path after `/ui` (empty or starting with `/`), as sent.
        page: &'a str,
    },
    /// `POST /api/v1/cfssl/authsign`.
    CfsslAuthsign,
    /// `POST /api/v1/cfssl/info`.
    CfsslInfo,
    /// `GET /metrics`.
    Metrics,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
}

/// Why a request matches no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    /// The path is not served (404).
    NotFound,
    /// The path belongs to the API but not under this method (405).
    MethodNotAllowed,
}

impl<'a> Route<'a> {
    /// The route of `method` (as sent, case-sensitive: `"GET"`, `"POST"`)
    /// and the raw request `path` (without the query).
    ///
    /// A path that is not a route but lies under `/v1/sign`,
    /// `/v1/classes`, the CFSSL prefix, `/metrics`, `/healthz` or
    /// `/readyz` is [`NoRoute::MethodNotAllowed`] under any method, as is a
    /// route asked for with another method, except a log path: those are
    /// [`NoRoute::NotFound`] under any method but `GET`.
    pub fn resolve(method: &str, path: &'a str) -> Result<Route<'a>, NoRoute> {
        if let Some(rest) = path.trim_start_matches('/').strip_prefix("ocsp/") {
            // The GET form's base64 may hold `/`: split at the first one only.
            let route = match (method, rest.split_once('/')) {
                ("POST", None) => Route::OcspPost { class: rest },
                ("GET", Some((class, request))) if !request.is_empty() => {
                    Route::OcspGet { class, request }
                }
                _ => return Err(NoRoute::MethodNotAllowed),
            };
            return Ok(route);
        }
        if let Some(page) = path.trim_start_matches('/').strip_prefix("ui") {
            if page.is_empty() || page.starts_with('/') {
                return match method {
                    "GET" => Ok(Route::Ui { page }),
                    _ => Err(NoRoute::MethodNotAllowed),
                };
            }
        }
        let segments: Vec<&'a str> = path.trim_start_matches('/').split('/').collect();
        let route = match segments.as_slice() {
            ["v1", "sign"] => Some(Route::Sign),
            ["v1", "classes"] => Some(Route::Classes),
            ["v1", "classes", class, "bundle"] => Some(Route::ClassBundle { class }),
            ["v1", "classes", class, "chain"] => Some(Route::ClassChain { class }),
            ["v1", "classes", class, "crl"] => Some(Route::ClassCrl { class }),
            ["v1", "classes", class, "crl", key] => Some(Route::ClassCrlOf { class, key }),
            ["v1", "revoke"] => Some(Route::Revoke),
            ["v1", "log", log_id, "search"] => Some(Route::LogSearch { log_id }),
            ["v1", "log", log_id, what] => {
                LogResource::from_segment(what).map(|resource| Route::Log { log_id, resource })
            }
            ["api", "v1", "cfssl", "authsign"] => Some(Route::CfsslAuthsign),
            ["api", "v1", "cfssl", "info"] => Some(Route::CfsslInfo),
            ["metrics"] => Some(Route::Metrics),
            ["healthz"] => Some(Route::Healthz),
            ["readyz"] => Some(Route::Readyz),
            _ => None,
        };
        match route {
            Some(route) if route.method() == method => Ok(route),
            _ => match segments.as_slice() {
                ["v1", "sign"]
                | ["v1", "revoke"]
                | ["ocsp"]
                | ["v1", "classes", ..]
                | ["api", "v1", "cfssl", ..]
                | ["metrics"]
                | ["healthz"]
                | ["readyz"] => Err(NoRoute::MethodNotAllowed),
                _ => Err(NoRoute::NotFound),
            },
        }
    }

    /// [`resolve`](Self::resolve), without saying why nothing matched.
    pub fn parse(method: &str, path: &'a str) -> Option<Route<'a>> {
        Route::resolve(method, path).ok()
    }

    /// The method the route is served under.
    pub const fn method(&self) -> &'static str {
        match self {
            Route::Sign
            | Route::Revoke
            | Route::OcspPost { .. }
            | Route::CfsslAuthsign
            | Route::CfsslInfo => "POST",
            Route::Classes
            | Route::ClassCrl { .. }
            | Route::ClassCrlOf { .. }
            | Route::OcspGet { .. }
            | Route::ClassBundle { .. }
            | Route::ClassChain { .. }
            | Route::Log { .. }
            | Route::LogSearch { .. }
            | Route::Ui { .. }
            | Route::Metrics
            | Route::Healthz
            | Route::Readyz => "GET",
        }
    }

    /// The route's path. Names are inserted as they are (not escaped): a
    /// name holding `/` makes a path that resolves to something else.
    pub fn path(&self) -> String {
        match self {
            Route::Sign => PATH_SIGN.to_owned(),
            Route::Classes => PATH_CLASSES.to_owned(),
            Route::ClassBundle { class } => class_bundle_path(class),
            Route::ClassChain { class } => class_chain_path(class),
            Route::Revoke => PATH_REVOKE.to_owned(),
            Route::ClassCrl { class } => class_crl_path(class),
            Route::ClassCrlOf { class, key } => class_crl_of_path(class, key),
            Route::OcspPost { class } => ocsp_path(class),
            Route::OcspGet { class, request } => format!("{}/{request}", ocsp_path(class)),
            Route::Log { log_id, resource } => log_path(log_id, *resource),
            Route::LogSearch { log_id } => log_search_path(log_id),
            Route::Ui { page } => format!("/ui{page}"),
            Route::CfsslAuthsign => PATH_CFSSL_AUTHSIGN.to_owned(),
            Route::CfsslInfo => PATH_CFSSL_INFO.to_owned(),
            Route::Metrics => PATH_METRICS.to_owned(),
            Route::Healthz => PATH_HEALTHZ.to_owned(),
            Route::Readyz => PATH_READYZ.to_owned(),
        }
    }

    /// Whether errors on this route use the CFSSL envelope.
    pub const fn is_cfssl(&self) -> bool {
        matches!(self, Route::CfsslAuthsign | Route::CfsslInfo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_route() -> Vec<Route<'static>> {
        let mut routes = vec![
            Route::Sign,
            Route::Classes,
            Route::ClassBundle { class: "db" },
            Route::ClassChain { class: "db" },
            Route::Revoke,
            Route::ClassCrl { class: "db" },
            Route::ClassCrlOf {
                class: "db",
                key: "db-int-20261205-ab12",
            },
            Route::OcspPost { class: "db" },
            Route::OcspGet {
                class: "db",
                request: "MEUw/Qz%2B",
            },
            Route::CfsslAuthsign,
            Route::CfsslInfo,
            Route::Metrics,
            Route::Healthz,
            Route::Readyz,
        ];
        routes.extend(LogResource::ALL.map(|resource| Route::Log {
            log_id: "dev-1",
            resource,
        }));
        routes.push(Route::LogSearch { log_id: "dev-1" });
        routes.extend(["", "/", "/search", "/entry/dev-1/7"].map(|page| Route::Ui { page }));
        routes
    }

    #[test]
    fn every_route_round_trips_through_its_path() {
        for route in every_route() {
            let path = route.path();
            assert_eq!(Route::resolve(route.method(), &path), Ok(route), "{path}");
            assert_eq!(Route::parse(route.method(), &path), Some(route), "{path}");
            let other = if route.method() == "GET" {
                "POST"
            } else {
                "GET"
            };
            assert_eq!(Route::parse(other, &path), None, "{other} {path}");
            assert_eq!(route.is_cfssl(), path.starts_with(CFSSL_PREFIX), "{path}");
        }
    }

    #[test]
    fn the_paths_are_the_documented_ones() {
        let paths: Vec<String> = every_route().iter().map(Route::path).collect();
        assert_eq!(
            paths,
            [
                "/v1/sign",
                "/v1/classes",
                "/v1/classes/db/bundle",
                "/v1/classes/db/chain",
                "/v1/revoke",
                "/v1/classes/db/crl",
                "/v1/classes/db/crl/db-int-20261205-ab12",
                "/ocsp/db",
                "/ocsp/db/MEUw/Qz%2B",
                "/api/v1/cfssl/authsign",
                "/api/v1/cfssl/info",
                "/metrics",
                "/healthz",
                "/readyz",
                "/v1/log/dev-1/sth",
                "/v1/log/dev-1/key",
                "/v1/log/dev-1/entries",
                "/v1/log/dev-1/proof",
                "/v1/log/dev-1/search",
                "/ui",
                "/ui/",
                "/ui/search",
                "/ui/entry/dev-1/7",
            ]
        );
    }

    #[test]
    fn unknown_paths_are_404_and_known_ones_under_another_method_405() {
        for path in [
            "/",
            "",
            "/v1",
            "/v1/sign/",
            "/v1/signs",
            "/V1/sign",
            "/v2/sign",
            "/v1/log",
            "/v1/log/dev-1",
            "/v1/log/dev-1/",
            "/v1/log/dev-1/leaves",
            "/v1/log/dev-1/sth/x",
            "/api/v1",
            "/api/v2/cfssl/info",
            "/metrics/",
            "/healthz/x",
            "/readyz.txt",
            "/uix",
            "/v1/ui/",
        ] {
            for method in ["GET", "POST", "PUT"] {
                assert_eq!(
                    Route::resolve(method, path),
                    Err(NoRoute::NotFound),
                    "{method} {path}"
                );
            }
        }
        for (method, path) in [
            ("GET", "/v1/sign"),
            ("PUT", "/v1/sign"),
            ("post", "/v1/sign"),
            ("POST", "/v1/classes"),
            ("GET", "/v1/classes/"),
            ("GET", "/v1/classes/db"),
            ("GET", "/v1/classes/db/roots"),
            ("GET", "/v1/classes/db/bundle/x"),
            ("DELETE", "/v1/classes/db/chain"),
            ("GET", "/api/v1/cfssl/authsign"),
            ("GET", "/api/v1/cfssl/"),
            ("GET", "/api/v1/cfssl"),
            ("POST", "/api/v1/cfssl/sign"),
            ("POST", "/metrics"),
            ("HEAD", "/healthz"),
            ("POST", "/readyz"),
            ("POST", "/ui/"),
            ("HEAD", "/ui/search"),
        ] {
            assert_eq!(
                Route::resolve(method, path),
                Err(NoRoute::MethodNotAllowed),
                "{method} {path}"
            );
        }
        // The log's read API is GET only, and not found otherwise.
        assert_eq!(
            Route::resolve("POST", "/v1/log/dev-1/sth"),
            Err(NoRoute::NotFound)
        );
    }

    #[test]
    fn names_are_handed_over_as_sent_never_decoded() {
        let bundle = |path| match Route::parse("GET", path) {
            Some(Route::ClassBundle { class }) => class,
            other => panic!("{path}: {other:?}"),
        };
        // Percent-encoding is not undone: `%64b` is not `db`, `%2F` is no
        // separator; the endpoint refuses names it does not serve.
        assert_eq!(bundle("/v1/classes/%64b/bundle"), "%64b");
        assert_eq!(bundle("/v1/classes/..%2Fetc/bundle"), "..%2Fetc");
        assert_eq!(bundle("/v1/classes/../bundle"), "..");
        assert_eq!(bundle("/v1/classes//bundle"), "");
        assert_eq!(bundle("/v1/classes/d b\u{e9}/bundle"), "d b\u{e9}");
        assert_eq!(
            Route::parse("GET", "/v1/log/%2e%2e/proof"),
            Some(Route::Log {
                log_id: "%2e%2e",
                resource: LogResource::Proof
            })
        );
        // A separator inside a name makes another path.
        assert_eq!(
            Route::parse("GET", "/v1/classes/a/b/chain"),
            None,
            "four segments after /v1 are no class path"
        );
        // Leading slashes are not significant; resources are exact.
        assert_eq!(Route::parse("POST", "//v1/sign"), Some(Route::Sign));
        assert_eq!(Route::parse("GET", "/v1/log/dev-1/STH"), None);
        assert_eq!(Route::parse("GET", "/v1/log/dev-1/sth%20"), None);
    }

    #[test]
    fn log_resources_name_their_segment() {
        for resource in LogResource::ALL {
            assert_eq!(LogResource::from_segment(resource.as_str()), Some(resource));
        }
        assert_eq!(LogResource::from_segment(""), None);
        assert_eq!(
            log_path("dev-1", LogResource::Entries),
            "/v1/log/dev-1/entries"
        );
    }
}

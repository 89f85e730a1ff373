//! The OpenAPI document (issue #15 item 3): `GET /_public/openapi.json` describes exactly the
//! routes the router serves (the list [`Orchestrator::served_routes`] records as routes are
//! registered, not a copy of the document), is structurally valid OpenAPI 3.1, carries each
//! blueprint's input contract, and the README's client API table lists exactly its operations.
//! `GET /_public/docs` renders it from assets served by the binary.

use std::collections::BTreeSet;

use avto::server::Orchestrator;
use avto_tests::{test_config, test_config_with, Server};
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(server: &Server) -> Value {
    let r = reqwest::get(server.url("/_public/openapi.json")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// (METHOD, path) of every operation of the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Starts a server of the demo blueprints with `config` and checks the router/document parity.
async fn parity(config: avto::server::Config) -> Value {
    let builder = || Orchestrator::builder().blueprints(avto_examples::api_demo::all()).config(config.clone());
    let served = builder().build().expect("builds").served_routes();
    let server = Server::with_builder(builder()).await;
    let doc = document(&server).await;
    let documented = operations(&doc);
    let mut routed = BTreeSet::new();
    for r in &served {
        if r.operation == "worker" {
            assert!(r.path.starts_with("/_worker/"), "only RXON routes are left out of the document: {r:?}");
            assert!(!doc["paths"].as_object().unwrap().contains_key(&r.path), "{r:?} is documented");
            continue;
        }
        routed.insert((r.method.as_str().to_owned(), r.path.replace("{*", "{")));
    }
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&routed).collect();
    assert!(undocumented.is_empty(), "served but not in the document: {undocumented:?}");
    assert!(unserved.is_empty(), "in the document but not served: {unserved:?}");
    assert!(served.iter().any(|r| r.operation == "worker"), "the worker routes are recorded too");
    server.stop().await;
    doc
}

#[tokio::test]
async fn the_document_lists_exactly_the_served_routes() {
    let doc = parity(test_config()).await;
    for create in ["/api/v1/jobs/order", "/api/v1/jobs/review", "/api/v1/jobs/echo"] {
        assert!(doc["paths"][create]["post"].is_object(), "a create operation per blueprint: {create}");
    }
    // Another prefix, and a configuration without the client API.
    let doc = parity(test_config_with(&[("CLIENT_API_PREFIX", "/")])).await;
    assert!(doc["paths"]["/v1/jobs/{job_id}"]["get"].is_object());
    let doc = parity(test_config_with(&[("ENABLE_CLIENT_API", "false")])).await;
    assert!(doc["paths"].get("/api/v1/jobs/{job_id}").is_none());
    assert!(doc["paths"]["/_public/status"]["get"].is_object());
}

/// Resolves a local `$ref` (`#/a/b`) in `doc`.
fn resolve<'d>(doc: &'d Value, r: &str) -> Option<&'d Value> {
    let pointer = r.strip_prefix('#')?;
    let unescaped: Vec<String> = pointer.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
    let mut v = doc;
    for seg in unescaped {
        v = v.get(seg.as_str())?;
    }
    Some(v)
}

fn refs<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if k == "$ref" => out.push(s),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let server = Server::start(avto_examples::api_demo::all()).await;
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    // Every $ref resolves, to a schema object.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "schemas are shared as components: {}", all.len());
    for r in &all {
        assert!(r.starts_with("#/components/"), "a local reference: {r}");
        assert!(resolve(&doc, r).is_some_and(Value::is_object), "{r} does not resolve");
    }
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    assert_eq!(schemes["clientToken"]["in"], "header");
    assert_eq!(schemes["clientToken"]["name"], "X-Client-Token");
    assert_eq!(schemes["adminBearer"]["scheme"], "bearer");
    assert_eq!(schemes["adminToken"]["name"], "X-Admin-Token");
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let templated: BTreeSet<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{m} {path}: no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{id}: no responses"));
            assert!(!responses.is_empty(), "{id}: no responses");
            for (status, resp) in responses {
                assert!(status.parse::<u16>().is_ok_and(|s| (100..600).contains(&s)), "{id}: status {status}");
                assert!(resp["description"].is_string(), "{id} {status}: no description");
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: BTreeSet<&str> =
                params.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect();
            assert_eq!(in_path, templated, "{id}: path parameters");
            assert!(params.iter().filter(|p| p["in"] == "path").all(|p| p["required"] == true), "{id}");
            for req in op["security"].as_array().cloned().unwrap_or_default() {
                for name in req.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{id}: unknown security scheme {name}");
                }
            }
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if secured {
                assert!(responses.contains_key("401"), "{id}: a secured operation documents 401");
            }
            for (status, resp) in responses {
                if status.starts_with('4') {
                    let schema = &resp["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/Error", "{id} {status}: the error body");
                }
            }
        }
    }
    // The links of the create operations name operations that exist.
    let create = &doc["paths"]["/api/v1/jobs/order"]["post"];
    let links = create["responses"]["202"]["links"].as_object().expect("links for stateful clients");
    for link in links.values() {
        assert!(ids.contains(link["operationId"].as_str().unwrap()), "{link}");
    }
    // The error shape of the 400 of ApiError::Invalid.
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error"]));
    assert!(resolve(&doc, error["properties"]["violations"]["items"]["$ref"].as_str().unwrap()).is_some());
    server.stop().await;
}

#[tokio::test]
async fn each_create_operation_carries_its_blueprints_input_contract() {
    let server = Server::start(avto_examples::api_demo::all()).await;
    let doc = document(&server).await;
    let body_schema = |path: &str| {
        let r = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: a JSON body"));
        resolve(&doc, r).unwrap().clone()
    };
    let order = body_schema("/api/v1/jobs/order");
    let input = &order["properties"]["initial_data"];
    assert_eq!(input["required"], serde_json::json!(["customer", "lines"]), "{input}");
    // The `$defs` of the schemars schema became components, its references point there.
    let line = input["properties"]["lines"]["items"]["$ref"].as_str().unwrap();
    assert_eq!(line, "#/components/schemas/order.input.Line");
    assert_eq!(resolve(&doc, line).unwrap()["required"], serde_json::json!(["sku", "qty"]));
    assert!(input.get("$defs").is_none() && input.get("$schema").is_none(), "{input}");
    // `"default": null` survives (the API's JSON rendering drops null members; the document's does not).
    let note = &input["properties"]["note"];
    assert!(note.as_object().unwrap().contains_key("default") && note["default"].is_null(), "{note}");
    // The same schema GET /blueprints publishes, but for the lifted $defs.
    let (_, list) = server.client().get("/api/v1/blueprints").await;
    let published = list.as_array().unwrap().iter().find(|b| b["name"] == "order").unwrap()["input_schema"].clone();
    assert_eq!(published["required"], input["required"]);
    // Blueprints without a contract take any object.
    let echo = body_schema("/api/v1/jobs/echo");
    assert_eq!(echo["properties"]["initial_data"], serde_json::json!({"type": ["object", "null"]}));
    assert_eq!(echo["required"], serde_json::json!([]), "the body may be the initial data itself");
    assert_eq!(order["required"], serde_json::json!(["initial_data"]), "a contract needs initial_data");
    let timeout = &echo["properties"]["dispatch_timeout"];
    assert_eq!(timeout["exclusiveMinimum"], 0);
    server.stop().await;
}

/// The README's client API table: the `METHOD /path` pairs of its first column, path parameters
/// as `{}` and query strings dropped.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split("### Client API").nth(1).expect("the client API section");
    let mut out = BTreeSet::new();
    for line in section.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')) {
        let first = line.split('|').nth(1).unwrap_or_default();
        for code in first.split('`').skip(1).step_by(2) {
            if let Some((method, path)) = code.split_once(' ') {
                if METHODS.contains(&method.to_lowercase().as_str()) {
                    let path = path.split('?').next().unwrap();
                    out.insert((method.to_owned(), normalize(path)));
                }
            }
        }
    }
    out
}

/// `{anything}` as `{}`.
fn normalize(path: &str) -> String {
    path.split('/').map(|s| if s.starts_with('{') { "{}" } else { s }).collect::<Vec<_>>().join("/")
}

#[tokio::test]
async fn the_readme_client_api_table_lists_exactly_the_documents_operations() {
    let server = Server::start(avto_examples::api_demo::all()).await;
    let doc = document(&server).await;
    let ops = operations(&doc);
    let mut documented = BTreeSet::new();
    for (method, path) in &ops {
        let op = &doc["paths"][path][method.to_lowercase()];
        let id = op["operationId"].as_str().unwrap();
        if let Some(rest) = path.strip_prefix("/api/").filter(|r| !r.starts_with("v1/")) {
            // Every versioned route is also served without the version (the README says so once).
            assert!(ops.contains(&(method.clone(), format!("/api/v1/{rest}"))), "{method} {path} has no v1 twin");
            continue;
        }
        if id.starts_with("create_job_") || id.starts_with("unknown_endpoint") {
            // `POST /api/v1/{endpoint}`: one row for every blueprint's create route.
            documented.insert((method.clone(), "/api/v1/{}".to_owned()));
            continue;
        }
        documented.insert((method.clone(), normalize(path)));
    }
    let readme = readme_routes();
    let missing: Vec<_> = documented.difference(&readme).collect();
    let extra: Vec<_> = readme.difference(&documented).collect();
    assert!(missing.is_empty(), "in the document, not in the README's client API table: {missing:?}");
    assert!(extra.is_empty(), "in the README's client API table, not in the document: {extra:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_docs_page_renders_the_document_from_assets_in_the_binary() {
    let server = Server::start(avto_examples::api_demo::all()).await;
    let r = reqwest::get(server.url("/_public/docs")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let page = r.text().await.unwrap();
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"), "{page}");
    assert!(page.contains("url: \"openapi.json\"") && page.contains("validatorUrl: null"), "{page}");
    // Every asset the page names is served, relative to /_public/.
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in page.split(attr).skip(1) {
            assets.push(part.split('"').next().unwrap().to_owned());
        }
    }
    assert_eq!(assets.len(), 2, "{assets:?}");
    for asset in assets {
        let r = reqwest::get(server.url(&format!("/_public/{asset}"))).await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        let body = r.text().await.unwrap();
        assert!(body.len() > 10_000, "{asset}: {} bytes", body.len());
        assert!(!body.contains("sourceMappingURL"), "{asset}: source maps are not served");
    }
    server.stop().await;
}

/// What the Schemathesis run of `.ci/schemathesis.sh` found: a query string axum could not
/// read (a member twice, ...) and a path segment that is not UTF-8 were answered with axum's
/// plain-text 400; `?detailed=` of the job lists and the history took any value as `false`.
#[tokio::test]
async fn malformed_query_strings_and_paths_are_json_400s() {
    let server = Server::start(avto_examples::api_demo::all()).await;
    let c = server.client();
    let id = "00000000-0000-0000-0000-000000000000";
    for path in [
        "/api/v1/jobs?offset=null&offset=null".to_owned(),
        "/api/v1/jobs?detailed=perhaps".to_owned(),
        "/_public/jobs/quarantined?limit=1&limit=2".to_owned(),
        format!("/api/v1/jobs/{id}?detailed=null&detailed=null"),
        format!("/api/v1/jobs/{id}/history?detailed=null&detailed=null"),
        format!("/api/v1/jobs/{id}/history?detailed=perhaps"),
        format!("/api/v1/jobs/{id}/files/upload?filename=a&filename=b"),
        "/api/v1/blueprints/%FF/graph".to_owned(),
    ] {
        let r = c.http.get(server.url(&path)).header("X-Client-Token", &c.token).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    server.stop().await;
}

//! The contract and the router agree: `api-spec/openapi.yaml` lists exactly the routes in
//! `rollgate_server::app::ROUTES` (plus `GET /metrics`), and the document hangs together
//! (operation ids, resolvable `$ref`s, declared path parameters, open endpoints).

use std::collections::{BTreeMap, BTreeSet};

use rollgate_server::app::ROUTES;
use yaml_rust2::{Yaml, YamlLoader};

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Routes served without a bearer token.
const OPEN_ROUTES: [(&str, &str); 4] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.yaml"),
    ("get", "/metrics"),
];

fn spec_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../api-spec/openapi.yaml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn spec() -> Yaml {
    let mut docs = YamlLoader::load_from_str(&spec_text()).expect("openapi.yaml is valid YAML");
    assert_eq!(
        docs.len(),
        1,
        "openapi.yaml holds exactly one YAML document"
    );
    docs.remove(0)
}

fn key(y: &Yaml) -> String {
    match y {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("unexpected mapping key {other:?}"),
    }
}

fn entries(y: &Yaml) -> Vec<(String, &Yaml)> {
    match y {
        Yaml::Hash(h) => h.iter().map(|(k, v)| (key(k), v)).collect(),
        _ => Vec::new(),
    }
}

/// Every operation: (method, path) → the operation object.
fn operations(doc: &Yaml) -> BTreeMap<(String, String), &Yaml> {
    let paths = &doc["paths"];
    assert!(matches!(paths, Yaml::Hash(_)), "`paths` must be a mapping");
    let mut ops = BTreeMap::new();
    for (path, item) in entries(paths) {
        for (method, op) in entries(item) {
            if HTTP_METHODS.contains(&method.as_str()) {
                ops.insert((method, path.clone()), op);
            }
        }
    }
    ops
}

/// Follows a local JSON pointer (`#/components/schemas/Problem`).
fn resolve<'a>(doc: &'a Yaml, reference: &str) -> Option<&'a Yaml> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(doc);
    }
    let mut node = doc;
    for raw in pointer.strip_prefix('/')?.split('/') {
        let token = raw.replace("~1", "/").replace("~0", "~");
        node = match node {
            Yaml::Hash(h) => h.get(&Yaml::String(token))?,
            Yaml::Array(a) => a.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

/// A node with its `$ref` followed (once), for parameters given by reference.
fn deref<'a>(doc: &'a Yaml, node: &'a Yaml) -> &'a Yaml {
    match node["$ref"].as_str() {
        Some(r) => resolve(doc, r).unwrap_or(&Yaml::BadValue),
        None => node,
    }
}

fn collect_refs(node: &Yaml, at: &str, out: &mut Vec<(String, String)>) {
    match node {
        Yaml::Hash(h) => {
            for (k, v) in h {
                let k = key(k);
                if k == "$ref" {
                    out.push((
                        at.to_owned(),
                        v.as_str().unwrap_or("<not a string>").to_owned(),
                    ));
                } else {
                    let token = k.replace('~', "~0").replace('/', "~1");
                    collect_refs(v, &format!("{at}/{token}"), out);
                }
            }
        }
        Yaml::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect_refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The parameters of an operation (path-level ones included), resolved: (in, name) → required.
fn parameters<'a>(
    doc: &'a Yaml,
    path_item: &'a Yaml,
    op: &'a Yaml,
) -> BTreeMap<(String, String), bool> {
    let mut out = BTreeMap::new();
    for list in [&path_item["parameters"], &op["parameters"]] {
        for p in list.as_vec().into_iter().flatten() {
            let p = deref(doc, p);
            let location = p["in"].as_str().unwrap_or("?").to_owned();
            let name = p["name"].as_str().unwrap_or("?").to_owned();
            let name = if location == "header" {
                name.to_ascii_lowercase()
            } else {
                name
            };
            out.insert((location, name), p["required"].as_bool().unwrap_or(false));
        }
    }
    out
}

#[test]
fn spec_lists_exactly_the_served_routes() {
    let doc = spec();
    let in_spec: BTreeSet<(String, String)> = operations(&doc).into_keys().collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_ascii_lowercase(), (*p).to_owned()))
        .chain([("get".to_owned(), "/metrics".to_owned())])
        .collect();
    let undocumented: Vec<_> = served.difference(&in_spec).collect();
    let not_served: Vec<_> = in_spec.difference(&served).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "api-spec/openapi.yaml and app::ROUTES disagree.\n\
         served but missing from the spec: {undocumented:#?}\n\
         in the spec but not served: {not_served:#?}"
    );
}

#[test]
fn spec_is_an_openapi_3_1_document() {
    let doc = spec();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "`openapi` must be 3.1.x, found {:?}",
        doc["openapi"]
    );
    assert!(
        doc["info"]["title"].as_str().is_some(),
        "info.title is required"
    );
    assert!(
        doc["info"]["version"].as_str().is_some(),
        "info.version is required"
    );
    let description = doc["info"]["description"].as_str().unwrap_or_default();
    for rule in 1..=12 {
        assert!(
            description.contains(&format!("| R{rule} |")),
            "info.description must describe rule R{rule}"
        );
    }
}

#[test]
fn every_operation_has_a_unique_operation_id_and_responses() {
    let doc = spec();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for ((method, path), op) in operations(&doc) {
        match op["operationId"].as_str() {
            Some(id) if !id.is_empty() => {
                if let Some(first) = seen.insert(id.to_owned(), (method.clone(), path.clone())) {
                    problems.push(format!(
                        "operationId {id:?} of {method} {path} is also used by {} {}",
                        first.0, first.1
                    ));
                }
            }
            _ => problems.push(format!("{method} {path} has no operationId")),
        }
        if op["summary"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{method} {path} has no summary"));
        }
        let responses = entries(&op["responses"]);
        if !responses.iter().any(|(code, _)| code.starts_with('2')) {
            problems.push(format!("{method} {path} declares no success response"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_ref_resolves_within_the_document() {
    let doc = spec();
    let mut refs = Vec::new();
    collect_refs(&doc, "#", &mut refs);
    assert!(!refs.is_empty(), "the spec uses no $ref at all?");
    let broken: Vec<_> = refs
        .iter()
        .filter(|(_, r)| resolve(&doc, r).is_none())
        .map(|(at, r)| format!("{at}: {r}"))
        .collect();
    assert!(broken.is_empty(), "unresolved $refs: {broken:#?}");
}

#[test]
fn path_parameters_and_headers_are_declared() {
    let doc = spec();
    let mut problems = Vec::new();
    for ((method, path), op) in operations(&doc) {
        let item = &doc["paths"][path.as_str()];
        let params = parameters(&doc, item, op);
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        let declared: BTreeSet<String> = params
            .iter()
            .filter(|((location, _), _)| location == "path")
            .map(|((_, name), required)| {
                if !required {
                    problems.push(format!(
                        "{method} {path}: path parameter {name} must be required"
                    ));
                }
                name.clone()
            })
            .collect();
        if in_template != declared {
            problems.push(format!(
                "{method} {path}: path parameters in the template {in_template:?}, declared {declared:?}"
            ));
        }
        if method == "post" && !params.contains_key(&("header".into(), "idempotency-key".into())) {
            problems.push(format!(
                "{method} {path}: POST without an Idempotency-Key parameter"
            ));
        }
        // `/metrics` may be served on its own address, outside the request-id middleware.
        let takes_request_id = !(method == "get" && path == "/metrics");
        if takes_request_id && !params.contains_key(&("header".into(), "x-request-id".into())) {
            problems.push(format!("{method} {path}: no X-Request-Id parameter"));
        }
    }
    let revise = &doc["paths"]["/v1/rollouts/{id}/plan"];
    let revise_params = parameters(&doc, revise, &revise["put"]);
    if revise_params.get(&("header".into(), "if-match".into())) != Some(&true) {
        problems.push("PUT /v1/rollouts/{id}/plan must require If-Match".to_owned());
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn bearer_auth_is_global_and_open_endpoints_opt_out() {
    let doc = spec();
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"].as_str(), Some("http"));
    assert_eq!(scheme["scheme"].as_str(), Some("bearer"));
    assert_eq!(scheme["bearerFormat"].as_str(), Some("JWT"));
    let global = doc["security"]
        .as_vec()
        .expect("global security requirement");
    assert!(
        global
            .iter()
            .any(|req| !matches!(req["bearerAuth"], Yaml::BadValue)),
        "bearerAuth must be required globally"
    );
    let open: BTreeSet<(String, String)> = OPEN_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let mut problems = Vec::new();
    for ((method, path), op) in operations(&doc) {
        let opts_out = op["security"].as_vec().is_some_and(Vec::is_empty);
        let is_open = open.contains(&(method.clone(), path.clone()));
        if is_open != opts_out {
            problems.push(format!(
                "{method} {path}: `security: []` {} expected",
                if is_open { "is" } else { "is not" }
            ));
        }
        if !is_open && matches!(op["responses"]["401"], Yaml::BadValue) {
            problems.push(format!(
                "{method} {path}: authenticated but declares no 401"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn errors_are_problem_json_and_request_bodies_are_closed() {
    let doc = spec();
    let mut problems = Vec::new();
    for ((method, path), op) in operations(&doc) {
        for (code, response) in entries(&op["responses"]) {
            let is_error = code.starts_with('4') || code.starts_with('5');
            if !is_error || (method == "get" && path == "/readyz") {
                continue;
            }
            let response = deref(&doc, response);
            let schema = &response["content"]["application/problem+json"]["schema"]["$ref"];
            if schema.as_str() != Some("#/components/schemas/Problem") {
                problems.push(format!(
                    "{method} {path} {code}: not application/problem+json Problem"
                ));
            }
        }
        let body = deref(&doc, &op["requestBody"]);
        // Closed JSON bodies; a form body (Slack's interactions) is the sender's format.
        if let (Yaml::Hash(_), Yaml::Hash(_)) = (body, &body["content"]["application/json"]) {
            let schema = deref(&doc, &body["content"]["application/json"]["schema"]);
            if schema["additionalProperties"].as_bool() != Some(false) {
                problems.push(format!(
                    "{method} {path}: request body schema must set additionalProperties: false"
                ));
            }
        }
    }
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for member in [
        "type",
        "title",
        "status",
        "detail",
        "instance",
        "rule",
        "errors",
        "current_version",
    ] {
        if matches!(problem[member], Yaml::BadValue) {
            problems.push(format!("Problem has no `{member}`"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn served_contract_is_the_file() {
    assert_eq!(
        rollgate_server::routes::health::OPENAPI_YAML,
        spec_text(),
        "the server embeds api-spec/openapi.yaml"
    );
}

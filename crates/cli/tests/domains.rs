//! Custom domains against the real server: `updraft domain map` and a Knative
//! DomainMapping route a host of the user's own to a service; a domain is held by one
//! namespace; the platform's own hosts and malformed names are refused and change
//! nothing; an unmapped domain is gone from the gateway.

mod common;

use common::*;

fn get_host(server: &Server, host: &str) -> Resp {
    server
        .request("GET", host, "/", &[], b"")
        .unwrap_or_else(|e| panic!("GET {host}: {e}"))
}

#[test]
fn a_domain_of_ones_own_reaches_its_service_and_no_other_namespace_can_take_it() {
    let server = Server::start(&[]);
    let (_dir, app) = fixture("python");
    server.deploy("web", &app, &[]);
    let direct = server.get("web", "/");
    assert_eq!(direct.status, 200, "{}", direct.body);
    assert_eq!(get_host(&server, "www.example.com").status, 404);

    let out = server.cli(&["domain", "map", "www.example.com", "--to", "web"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("domainmapping/www.example.com created"),
        "{}",
        out.stdout
    );
    let mapped = get_host(&server, "www.example.com");
    assert_eq!((mapped.status, &mapped.body), (200, &direct.body));

    // Knative's manifest, applied twice: the second changes nothing.
    let manifest = server.dir.path().join("mapping.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: serving.knative.dev/v1beta1
kind: DomainMapping
metadata:
  name: api.example.com
spec:
  ref: {name: web, kind: Service, apiVersion: serving.knative.dev/v1}
",
    )
    .unwrap();
    let applied = server.json(&["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(applied[0]["result"], "created", "{applied}");
    let again = server.json(&["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(again[0]["result"], "unchanged", "{again}");
    assert_eq!(get_host(&server, "api.example.com:8080").status, 200);

    let listed = server.json(&["domain", "list"]);
    let domains: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["domain"].as_str().unwrap())
        .collect();
    assert_eq!(domains, ["api.example.com", "www.example.com"]);
    assert_eq!(
        listed[1]["url"],
        format!("http://www.example.com:{}", server.gateway.port())
    );

    // Another namespace cannot take the domain, nor learn whose it is.
    assert_eq!(server.cli(&["namespace", "create", "team"]).code, 0);
    server.deploy("web", &app, &["-n", "team"]);
    let taken = server.cli(&["domain", "map", "www.example.com", "--to", "web", "-n", "team"]);
    assert_ne!(taken.code, 0);
    assert!(taken.stderr.contains("mapped in another namespace"), "{}", taken.stderr);
    assert!(!taken.stderr.contains("default"), "{}", taken.stderr);
    let unmapped_elsewhere = server.cli(&["domain", "unmap", "www.example.com", "-n", "team"]);
    assert_ne!(unmapped_elsewhere.code, 0);
    assert_eq!(get_host(&server, "www.example.com").status, 200);

    // Hostile or mistaken names are refused, naming the field, and change nothing.
    for (domain, says) in [
        ("web.team.localhost", "platform's own domain"),
        ("WWW.Example.com", "lower-case DNS name"),
        ("evil..example.com", "lower-case DNS name"),
        ("127.0.0.1", "lower-case DNS name"),
        ("localhost", "lower-case DNS name"),
    ] {
        let out = server.cli(&["domain", "map", domain, "--to", "web", "-n", "team"]);
        assert_ne!(out.code, 0, "{domain}");
        assert!(
            out.stderr.contains("domain") && out.stderr.contains(says),
            "{domain}: {}",
            out.stderr
        );
    }
    let tls_without_tls = server.cli(&[
        "domain",
        "map",
        "tls.example.com",
        "--to",
        "web",
        "--tls-secret",
        "cert",
    ]);
    assert_ne!(tls_without_tls.code, 0);
    assert!(
        tls_without_tls.stderr.contains("serves no TLS"),
        "{}",
        tls_without_tls.stderr
    );
    assert_eq!(server.json(&["domain", "list", "-n", "team"]), serde_json::json!([]));

    // Moved to the other service of the namespace, then unmapped.
    assert_eq!(server.cli(&["deploy", "other", app.to_str().unwrap()]).code, 0);
    let moved = server.cli(&["domain", "map", "www.example.com", "--to", "other"]);
    assert!(moved.stdout.contains("updated"), "{}", moved.stdout);
    assert_eq!(get_host(&server, "www.example.com").status, 200);
    assert_eq!(server.cli(&["domain", "unmap", "www.example.com"]).code, 0);
    assert_eq!(get_host(&server, "www.example.com").status, 404);
    assert_eq!(get_host(&server, "api.example.com").status, 200);

    // The mapping survives a restart: it is in the store, not only in the table.
    let mut server = server;
    server.restart();
    assert_eq!(get_host(&server, "api.example.com").status, 200);
}

//! The two text formats scrapers read, and which one a scraper asked for.
//!
//! prometheus-client writes OpenMetrics 1.0, where a counter family is named without
//! its `_total` suffix. Prometheus' own text format 0.0.4 (what `promtool check
//! metrics`, older Prometheus servers and most tools read) names the family after its
//! samples, so each family's HELP and TYPE lines are renamed, `# UNIT` and `# EOF`
//! dropped and OpenMetrics-only types mapped to 0.0.4's.

/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header prefers OpenMetrics to the Prometheus text format. With
/// no header, or equal preference, the answer is Prometheus text, which every
/// scraper reads.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let (mut openmetrics, mut text) = (0.0f64, 0.0f64);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics > text
}

/// OpenMetrics text as prometheus-client writes it, in the Prometheus 0.0.4 format.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // HELP comes before TYPE; it is held until the family's 0.0.4 name is known.
    let mut help: Option<(&str, &str)> = None;
    let mut counters: Vec<&str> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => {
                    counters.push(family);
                    (format!("{family}_total"), "counter")
                }
                "info" => (format!("{family}_info"), "gauge"),
                "stateset" => (family.to_string(), "gauge"),
                "gaugehistogram" => (family.to_string(), "histogram"),
                "unknown" => (family.to_string(), "untyped"),
                other => (family.to_string(), other),
            };
            if let Some((_, text)) = help.take().filter(|(h, _)| *h == family) {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        // A counter's creation time has no place in 0.0.4.
        let sample = line.split(['{', ' ']).next().unwrap_or("");
        if counters.iter().any(|c| sample.strip_prefix(c) == Some("_created")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The exposition with only the samples of the given namespaces: a tenant's scrape.
/// Comment lines (HELP, TYPE, UNIT, EOF) stay, so the text still parses; samples with
/// no `namespace` label are the platform's own and are left out too.
pub fn only_namespaces(text: &str, allowed: &[&str]) -> String {
    let mut out = String::with_capacity(text.len() / 2);
    for line in text.lines() {
        let keep = line.starts_with('#') || sample_namespace(line).is_some_and(|ns| allowed.contains(&ns));
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The value of a sample's `namespace` label. Label values here are DNS labels and
/// names, which hold no quotes, so the first `namespace="` after `{` or `,` in the
/// label set is the label itself.
fn sample_namespace(line: &str) -> Option<&str> {
    let labels = &line[line.find('{')? + 1..line.find('}')?];
    let start = labels
        .match_indices("namespace=\"")
        .find(|(i, _)| *i == 0 || labels.as_bytes()[i - 1] == b',')?
        .0
        + "namespace=\"".len();
    let value = &labels[start..];
    Some(&value[..value.find('"')?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapers_get_what_they_prefer() {
        // Prometheus 2.x with OpenMetrics negotiation on, and its 0.0.4-only default.
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")));
        assert!(!wants_openmetrics(None), "curl without a header");
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0, text/plain")));
        assert!(
            !wants_openmetrics(Some("application/openmetrics-text;q=0.5, */*;q=0.5")),
            "a tie goes to 0.0.4"
        );
        assert!(wants_openmetrics(Some("Application/OpenMetrics-Text")));
    }

    #[test]
    fn counters_are_named_after_their_samples_and_openmetrics_lines_go() {
        let om = "# HELP updraft_requests Requests answered.\n# TYPE updraft_requests counter\nupdraft_requests_total{code=\"2xx\"} 3\nupdraft_requests_created{code=\"2xx\"} 1.7e9\n# HELP updraft_pool_size Stem cells.\n# TYPE updraft_pool_size gauge\nupdraft_pool_size 2\n# HELP build Build.\n# TYPE build info\nbuild_info{version=\"1\"} 1\n# HELP d Duration.\n# TYPE d histogram\n# UNIT d seconds\nd_bucket{le=\"+Inf\"} 1\nd_sum 0.5\nd_count 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP updraft_requests_total Requests answered.\n# TYPE updraft_requests_total counter\nupdraft_requests_total{code=\"2xx\"} 3\n# HELP updraft_pool_size Stem cells.\n# TYPE updraft_pool_size gauge\nupdraft_pool_size 2\n# HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{version=\"1\"} 1\n# HELP d Duration.\n# TYPE d histogram\nd_bucket{le=\"+Inf\"} 1\nd_sum 0.5\nd_count 1\n"
        );
    }

    #[test]
    fn a_tenant_scrape_keeps_its_namespaces_samples_and_every_comment() {
        let text = "# HELP updraft_requests Requests.\n# TYPE updraft_requests counter\n\
updraft_requests_total{namespace=\"a\",service=\"s\"} 1\n\
updraft_requests_total{service=\"x\",namespace=\"b\"} 2\n\
updraft_requests_total{subnamespace=\"a\",namespace=\"c\"} 3\n\
updraft_pool_size 4\n# EOF\n";
        let only_a = only_namespaces(text, &["a"]);
        assert_eq!(
            only_a,
            "# HELP updraft_requests Requests.\n# TYPE updraft_requests counter\n\
updraft_requests_total{namespace=\"a\",service=\"s\"} 1\n# EOF\n"
        );
        assert!(only_namespaces(text, &["b", "c"]).contains("} 2\n"));
        assert!(only_namespaces(text, &["b", "c"]).contains("} 3\n"));
        assert!(!only_namespaces(text, &[]).contains("updraft_pool_size"));
    }
}

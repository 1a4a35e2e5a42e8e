//! From a revision template to what runs (a [`RevisionConfig`]), for each kind of
//! workload. Pure: the deploy path passes in what it found on disk or in the image.

use crate::annotations::allowed_outbound_hosts;
use crate::package::Launch;
use crate::runtime_kind::{Language, RuntimeKind};
use crate::{FieldError, RevisionConfig, RevisionTemplate};

/// What an OCI image asks to run.
#[derive(Debug, Clone, Copy)]
pub struct ImageProcess<'a> {
    /// `sha256:<hex>` of the image manifest.
    pub digest: &'a str,
    pub entrypoint: &'a [String],
    pub cmd: &'a [String],
}

fn common(template: &RevisionTemplate, digest: &str, runtime: RuntimeKind) -> RevisionConfig {
    RevisionConfig {
        package_digest: digest.to_string(),
        command: Vec::new(),
        command_source: String::new(),
        env: template.env.clone(),
        env_secrets: template.env_secrets.clone(),
        memory_bytes: template.resources.memory_limit_bytes,
        cpu_millis: template.resources.cpu_limit_millis,
        scale_to_zero_after_ms: template.scale_to_zero_after().as_millis() as u64,
        readiness: template.readiness.clone(),
        runtime,
        allowed_hosts: Vec::new(),
        layers: Vec::new(),
    }
}

/// A code package: the template's command (plus args), or the package's detected one;
/// the package's env under the template's; the template's limits over the package's.
pub fn for_package(
    template: &RevisionTemplate,
    digest: &str,
    detected: Result<Launch, FieldError>,
) -> Result<RevisionConfig, FieldError> {
    let (mut command, source, launch) = match (&template.command, detected) {
        (Some(command), detected) => {
            // A package with nothing to detect is fine when the template names the command.
            let launch = match detected {
                Ok(launch) => launch,
                Err(e) if e.field == "package" => Launch::default(),
                Err(e) => return Err(e),
            };
            (command.clone(), "template (--cmd or the manifest)".to_string(), launch)
        }
        (None, Ok(launch)) => (launch.command.clone(), launch.source.clone(), launch),
        (None, Err(e)) => return Err(e),
    };
    command.extend(template.args.iter().flatten().cloned());
    let mut env = launch.env;
    env.extend(template.env.clone());
    Ok(RevisionConfig {
        command,
        command_source: source,
        env,
        memory_bytes: template.resources.memory_limit_bytes.or(launch.memory_bytes),
        cpu_millis: template.resources.cpu_limit_millis.or(launch.cpu_millis),
        ..common(template, digest, RuntimeKind::Process)
    })
}

/// A function: the runtime's shim serves the handler, which must be in the package.
pub fn for_function(
    template: &RevisionTemplate,
    digest: &str,
    runtime: &str,
    handler: &str,
    handler_exists: bool,
) -> Result<RevisionConfig, FieldError> {
    let language = Language::parse(runtime)
        .ok_or_else(|| FieldError::new("function_runtime", format!("{runtime:?} is not one of python3, node")))?;
    if !handler_exists {
        return Err(FieldError::new(
            "function_handler",
            format!("{handler:?} is not in the package"),
        ));
    }
    Ok(RevisionConfig {
        command: vec![handler.to_string()],
        command_source: format!("{runtime} function runtime"),
        readiness: None,
        ..common(template, digest, RuntimeKind::Function(language))
    })
}

/// An OCI image, by Kubernetes' rule so manifests mean what they mean there: `command`
/// replaces the Entrypoint and drops the Cmd; `args` replaces the Cmd.
pub fn for_image(template: &RevisionTemplate, image: ImageProcess<'_>) -> Result<RevisionConfig, FieldError> {
    let (command, source) = match (&template.command, &template.args) {
        (Some(command), args) => (
            command.iter().chain(args.iter().flatten()).cloned().collect::<Vec<_>>(),
            "template command (--cmd or the manifest)",
        ),
        (None, Some(args)) => (
            image.entrypoint.iter().chain(args).cloned().collect(),
            "image Entrypoint with the template's args",
        ),
        (None, None) => (
            image.entrypoint.iter().chain(image.cmd).cloned().collect(),
            "image Entrypoint and Cmd",
        ),
    };
    if command.is_empty() {
        return Err(FieldError::new(
            "image",
            "the image has neither Entrypoint nor Cmd; give the program to run (--cmd, or command in the manifest)",
        ));
    }
    Ok(RevisionConfig {
        command,
        command_source: source.to_string(),
        ..common(template, image.digest, RuntimeKind::Oci)
    })
}

/// A `wasi:http` component: the server itself serves it, so there is no command.
pub fn for_component(template: &RevisionTemplate, digest: &str) -> RevisionConfig {
    RevisionConfig {
        command_source: "wasi:http component".to_string(),
        readiness: None,
        allowed_hosts: allowed_outbound_hosts(&template.annotations),
        ..common(template, digest, RuntimeKind::Wasm)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::annotations::ALLOWED_OUTBOUND_HOSTS;

    const DIGEST: &str = "sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn template(command: Option<&[&str]>, args: Option<&[&str]>) -> RevisionTemplate {
        let mut template = RevisionTemplate::for_package(DIGEST);
        template.command = command.map(strings);
        template.args = args.map(strings);
        template.env = BTreeMap::from([("MODE".into(), "template".into())]);
        template
    }

    fn launch() -> Launch {
        Launch {
            command: strings(&["python3", "main.py"]),
            source: "main.py".into(),
            env: BTreeMap::from([("MODE".into(), "package".into()), ("ONLY".into(), "package".into())]),
            memory_bytes: Some(128 << 20),
            cpu_millis: Some(500),
            build: None,
        }
    }

    #[test]
    fn a_package_runs_the_template_command_or_the_detected_one() {
        let nothing = || Err(FieldError::new("package", "no entry point"));
        // (command, args, detected, expected command, expected source)
        type Case = (
            Option<&'static [&'static str]>,
            Option<&'static [&'static str]>,
            bool,
            &'static [&'static str],
            &'static str,
        );
        let cases: &[Case] = &[
            (None, None, true, &["python3", "main.py"], "main.py"),
            (
                None,
                Some(&["--port", "1"]),
                true,
                &["python3", "main.py", "--port", "1"],
                "main.py",
            ),
            (
                Some(&["./run"]),
                None,
                true,
                &["./run"],
                "template (--cmd or the manifest)",
            ),
            (
                Some(&["./run"]),
                Some(&["-v"]),
                false,
                &["./run", "-v"],
                "template (--cmd or the manifest)",
            ),
        ];
        for (command, args, detected, want, source) in cases {
            let found = if *detected { Ok(launch()) } else { nothing() };
            let config = for_package(&template(*command, *args), DIGEST, found).unwrap();
            assert_eq!(config.command, strings(want), "{command:?} {args:?}");
            assert_eq!(config.command_source, *source);
            assert_eq!(config.runtime, RuntimeKind::Process);
        }
        let config = for_package(&template(None, None), DIGEST, Ok(launch())).unwrap();
        assert_eq!(config.env["MODE"], "template", "the template's env wins");
        assert_eq!(config.env["ONLY"], "package");
        assert_eq!((config.memory_bytes, config.cpu_millis), (Some(128 << 20), Some(500)));
        assert_eq!(
            for_package(&template(None, None), DIGEST, nothing()).unwrap_err().field,
            "package"
        );
        let bad = Err(FieldError::new("updraft.yaml", "bad"));
        assert_eq!(
            for_package(&template(Some(&["./run"]), None), DIGEST, bad)
                .unwrap_err()
                .field,
            "updraft.yaml",
            "only a missing entry point is excused by a command"
        );
    }

    #[test]
    fn a_function_needs_a_known_runtime_and_its_handler() {
        let t = template(None, None);
        let config = for_function(&t, DIGEST, "python3", "handler.py", true).unwrap();
        assert_eq!(config.runtime, RuntimeKind::Function(Language::Python));
        assert_eq!(config.command, strings(&["handler.py"]));
        assert_eq!(config.command_source, "python3 function runtime");
        assert_eq!(
            for_function(&t, DIGEST, "ruby", "h.rb", true).unwrap_err().field,
            "function_runtime"
        );
        assert_eq!(
            for_function(&t, DIGEST, "node", "gone.mjs", false).unwrap_err().field,
            "function_handler"
        );
    }

    #[test]
    fn an_image_runs_by_the_kubernetes_rule() {
        let (entrypoint, cmd) = (strings(&["/entry"]), strings(&["serve", "--fast"]));
        let image = ImageProcess {
            digest: DIGEST,
            entrypoint: &entrypoint,
            cmd: &cmd,
        };
        type Case = (
            Option<&'static [&'static str]>,
            Option<&'static [&'static str]>,
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (None, None, &["/entry", "serve", "--fast"]),
            (None, Some(&["check"]), &["/entry", "check"]),
            (Some(&["/bin/sh"]), None, &["/bin/sh"]),
            (Some(&["/bin/sh"]), Some(&["-c", "true"]), &["/bin/sh", "-c", "true"]),
        ];
        for (command, args, want) in cases {
            let config = for_image(&template(*command, *args), image).unwrap();
            assert_eq!(config.command, strings(want), "{command:?} {args:?}");
            assert_eq!(config.runtime, RuntimeKind::Oci);
        }
        let empty = ImageProcess {
            digest: DIGEST,
            entrypoint: &[],
            cmd: &[],
        };
        assert_eq!(for_image(&template(None, None), empty).unwrap_err().field, "image");
    }

    #[test]
    fn a_component_has_no_command_and_its_allowed_hosts() {
        let mut t = template(None, None);
        t.annotations
            .insert(ALLOWED_OUTBOUND_HOSTS.into(), "api.example.com".into());
        let config = for_component(&t, DIGEST);
        assert!(config.command.is_empty());
        assert_eq!(config.runtime, RuntimeKind::Wasm);
        assert_eq!(config.allowed_hosts, ["api.example.com"]);
        assert_eq!(config.env["MODE"], "template");
    }
}

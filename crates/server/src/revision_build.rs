//! What a revision runs, from its template: its package unpacked and its command
//! found, its component compiled and checked, or its image pulled. The deploy path
//! builds this before it stages the revision, so a template that cannot run is
//! refused before anything is written. A package's dependencies and build command
//! are built here too (`builds`).

use std::sync::Arc;

use updraft_model::annotations::{FUNCTION_HANDLER, FUNCTION_RUNTIME};
use updraft_model::build::dependencies;
use updraft_model::package::detect;
use updraft_model::revision_config::{self, ImageProcess};
use updraft_model::secret::SecretKeyRef;
use updraft_model::template::{RevisionTemplate, Source};
use updraft_model::RevisionConfig;
use updraft_runtime::clock::now_us;
use updraft_runtime::image::{stored_digest, ImageStore};
use updraft_runtime::package::{unpack, DirFiles, UnpackLimits};
use updraft_runtime::wasm::WasmRuntime;
use updraft_store::Store;

use crate::builds::{Builds, Built, Target};
use crate::error::{image_error, package_error};
use crate::secrets::Secrets;
use crate::{ApiError, Paths};

pub struct RevisionBuilder {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) images: Arc<ImageStore>,
    pub(crate) wasm: Arc<WasmRuntime>,
    pub(crate) paths: Paths,
    pub(crate) unpack_limits: UnpackLimits,
    pub(crate) secrets: Arc<Secrets>,
    pub(crate) builds: Arc<Builds>,
}

/// The config with what its builds give its instances: the dependency layers, found
/// ahead of anything the user's own `PYTHONPATH` names.
fn with_build(mut config: RevisionConfig, built: Built) -> RevisionConfig {
    for (name, value) in built.env {
        let value = match config.env.get(&name) {
            Some(own) if !own.is_empty() => format!("{value}:{own}"),
            _ => value,
        };
        config.env.insert(name, value);
    }
    config.layers = built.layers;
    config
}

impl RevisionBuilder {
    /// User and password from the namespace's secret named by `imagePullSecrets`.
    fn registry_credential(&self, namespace: &str, secret: &str) -> Result<(String, String), ApiError> {
        let [username, password] = ["username", "password"].map(|key| {
            let reference = SecretKeyRef {
                name: secret.to_string(),
                key: key.to_string(),
            };
            self.secrets.text(namespace, &reference, key).map_err(|e| {
                ApiError::bad_request(
                    "image_pull_secret",
                    format!("{e}; a registry secret holds username and password"),
                )
            })
        });
        Ok((username?, password?))
    }

    /// The config revision `rev_name` runs. A package is unpacked into the revision's
    /// directory, which is left in place on success and removed on failure.
    pub async fn config(
        &self,
        namespace: &str,
        service: &str,
        rev_name: &str,
        template: &RevisionTemplate,
    ) -> Result<RevisionConfig, ApiError> {
        let workdir = self.paths.revision_dir(namespace, rev_name);
        let _ = std::fs::remove_dir_all(&workdir);
        std::fs::create_dir_all(workdir.parent().expect("revision dirs have a parent")).map_err(ApiError::internal)?;
        let config = match template.validate("template")? {
            Source::Package { digest } => {
                let blob = self.paths.blob(&digest);
                let limits = self.unpack_limits;
                let dir = workdir.clone();
                let (unpacked, dependencies) = tokio::task::spawn_blocking(move || {
                    unpack(&blob, &dir, limits)?;
                    let files = DirFiles(&dir);
                    Ok::<_, updraft_runtime::package::PackageError>((detect(&files), dependencies(&files)))
                })
                .await
                .map_err(ApiError::internal)?
                .map_err(package_error)?;
                let build_command = unpacked.as_ref().ok().and_then(|l| l.build.clone());
                let function = template
                    .annotations
                    .get(FUNCTION_RUNTIME)
                    .zip(template.annotations.get(FUNCTION_HANDLER));
                let resolved = match function {
                    Some((runtime, handler)) => revision_config::for_function(
                        template,
                        &digest,
                        runtime,
                        handler,
                        workdir.join(handler).exists(),
                    ),
                    None => revision_config::for_package(template, &digest, unpacked),
                };
                let built = match (resolved, dependencies) {
                    (Ok(config), Ok(dependencies)) => {
                        let mut steps: Vec<String> = dependencies.iter().map(|d| d.describe()).collect();
                        steps.extend(build_command.as_ref().map(|line| format!("build: {line}")));
                        if !steps.is_empty() {
                            crate::progress::report("build", steps.join(", "));
                        }
                        let builds = self.builds.clone();
                        let (namespace, service, revision) =
                            (namespace.to_string(), service.to_string(), rev_name.to_string());
                        let dir = workdir.clone();
                        tokio::task::spawn_blocking(move || {
                            let target = Target {
                                namespace: &namespace,
                                service: &service,
                                revision: &revision,
                                workdir: &dir,
                            };
                            builds.run(&target, &dependencies, build_command.as_deref())
                        })
                        .await
                        .map_err(ApiError::internal)
                        .and_then(|built| Ok(with_build(config, built?)))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e.into()),
                };
                match built {
                    Ok(config) => config,
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&workdir);
                        return Err(e);
                    }
                }
            }
            Source::Wasm { digest } => {
                // Compiled (and cached) now: a file that is not a wasi:http component
                // is refused before anything is stored.
                let wasm = self.wasm.clone();
                let blob = self.paths.blob(&digest);
                let checked = digest.clone();
                crate::progress::report("compile", "compiling the component".to_string());
                tokio::task::spawn_blocking(move || wasm.check(&checked, &blob))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(|e| ApiError::bad_request("wasm", format!("is not a usable wasi:http component: {e}")))?;
                revision_config::for_component(template, &digest)
            }
            Source::Image { reference } => {
                let image = match stored_digest(&reference) {
                    Some(digest) => self.images.get(digest).ok_or_else(|| {
                        ApiError::bad_request(
                            "image",
                            format!("no image {digest} is stored; import it first (POST /v1/images)"),
                        )
                    })?,
                    None => {
                        let credential = match &template.image_pull_secret {
                            Some(secret) => Some(self.registry_credential(namespace, secret)?),
                            None => None,
                        };
                        crate::progress::report("pull", reference.clone());
                        let watcher = crate::progress::current();
                        let pulled = move |p: updraft_runtime::image::Progress| {
                            if let Some(watcher) = watcher.as_ref().filter(|_| p.done == p.total) {
                                let detail = match p.cached {
                                    true => format!("{} already here", p.what),
                                    false => format!("{} fetched", p.what),
                                };
                                let _ = watcher.send(crate::progress::Step {
                                    phase: "pull",
                                    detail: Some(detail),
                                    bytes: Some(p.done),
                                });
                            }
                        };
                        let image = self
                            .images
                            .pull_with(&reference, credential, &pulled)
                            .await
                            .map_err(image_error)?;
                        if let Err(refusal) = crate::quota::admit_pulled_image(self, namespace, image.info.size).await {
                            // Pulled for this deploy alone: nothing else runs it.
                            if !self.store.blob_exists(&image.info.digest).await? {
                                self.images.remove(&image.info.digest);
                            }
                            return Err(refusal);
                        }
                        image
                    }
                };
                // Recorded like an upload, so revisions reference it and an unused
                // image is collected like an unused package.
                self.store
                    .put_blob(&image.info.digest, image.info.size, now_us())
                    .await?;
                revision_config::for_image(
                    template,
                    ImageProcess {
                        digest: &image.info.digest,
                        entrypoint: &image.info.entrypoint,
                        cmd: &image.info.cmd,
                    },
                )?
            }
        };
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(env: &[(&str, &str)]) -> RevisionConfig {
        serde_json::from_value(serde_json::json!({
            "package_digest": "sha256:00",
            "command": ["python3", "main.py"],
            "command_source": "main.py",
            "env": env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            "memory_bytes": null,
            "cpu_millis": null,
            "scale_to_zero_after_ms": 60000,
        }))
        .unwrap()
    }

    #[test]
    fn a_layer_comes_ahead_of_the_users_own_import_path() {
        let built = Built {
            env: BTreeMap::from([("PYTHONPATH".to_string(), "/layers/ns/k/python".to_string())]),
            layers: vec!["k".to_string()],
        };
        let layered = with_build(config(&[("PYTHONPATH", "/app/src"), ("MODE", "x")]), built);
        assert_eq!(layered.env["PYTHONPATH"], "/layers/ns/k/python:/app/src");
        assert_eq!(layered.env["MODE"], "x");
        assert_eq!(layered.layers, ["k"]);

        let plain = with_build(config(&[]), Built::default());
        assert!(!plain.env.contains_key("PYTHONPATH"));
        assert!(plain.layers.is_empty());
    }
}

//! What the operator's installer lets ModelWorkers ask for: node paths a
//! `file://` model may be read from, images a pod may run, and service
//! accounts a pod may run as.
//!
//! Whoever may create a ModelWorker should not gain more than that: without
//! these limits, `file:///etc/shadow` would become a hostPath volume and let
//! anyone read any file of any node, and `spec.image` or
//! `spec.serviceAccountName` would run any image under any identity of the
//! namespace. `file://` is therefore off unless the installer names host
//! directories; images and service accounts are open unless it names some.

use llorch_api::ModelWorker;

/// The installer's limits, from `--allowed-host-paths`,
/// `--allowed-image-prefixes` and `--allowed-service-accounts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Absolute node directories under which `file://` models may lie;
    /// empty: `file://` is refused.
    pub allowed_host_paths: Vec<String>,
    /// Prefixes `spec.image` must start with; empty: any image.
    pub allowed_image_prefixes: Vec<String>,
    /// Names `spec.serviceAccountName` may take; empty: any.
    pub allowed_service_accounts: Vec<String>,
}

/// An allowed host directory that is not an absolute, normalized path.
#[derive(Debug, thiserror::Error)]
#[error(
    "allowed host path {0:?} must be an absolute directory without '.', '..' or empty components, e.g. /var/lib/models"
)]
pub struct BadHostPath(pub String);

impl Policy {
    /// A policy, checking that each allowed host directory is an absolute
    /// normalized path (a trailing '/' is dropped).
    pub fn new(
        allowed_host_paths: Vec<String>,
        allowed_image_prefixes: Vec<String>,
        allowed_service_accounts: Vec<String>,
    ) -> Result<Self, BadHostPath> {
        let allowed_host_paths = allowed_host_paths
            .into_iter()
            .map(|p| {
                let trimmed = if p.len() > 1 {
                    p.trim_end_matches('/')
                } else {
                    &p
                };
                if trimmed == "/" || normalized_absolute(trimmed) {
                    Ok(trimmed.to_owned())
                } else {
                    Err(BadHostPath(p))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            allowed_host_paths,
            allowed_image_prefixes: allowed_image_prefixes
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect(),
            allowed_service_accounts: allowed_service_accounts
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }

    /// Every way the spec goes beyond the policy, each a sentence a user
    /// can act on.
    pub fn check(&self, mw: &ModelWorker) -> Vec<String> {
        let s = &mw.spec;
        let mut errors = Vec::new();
        if let Some(path) = s.model.uri.strip_prefix("file://")
            && let Err(why) = self.host_path_allowed(path)
        {
            errors.push(format!("model.uri {:?}: {why}", s.model.uri));
        }
        if let Some(image) = &s.image
            && !self.allowed_image_prefixes.is_empty()
            && !self
                .allowed_image_prefixes
                .iter()
                .any(|p| image_has_prefix(image, p))
        {
            errors.push(format!(
                "image {image:?} is not allowed by the operator: it must start with one of {:?}",
                self.allowed_image_prefixes
            ));
        }
        if let Some(sa) = &s.service_account_name
            && !self.allowed_service_accounts.is_empty()
            && !self.allowed_service_accounts.contains(sa)
        {
            errors.push(format!(
                "serviceAccountName {sa:?} is not allowed by the operator: use one of {:?} or leave it unset",
                self.allowed_service_accounts
            ));
        }
        errors
    }

    /// Whether a `file://` path may be mounted: absolute, normalized and
    /// strictly inside an allowed directory (compared by whole components,
    /// so `/models` does not allow `/models-private/x`).
    fn host_path_allowed(&self, path: &str) -> Result<(), String> {
        if self.allowed_host_paths.is_empty() {
            return Err(
                "file:// models are disabled by the operator (its installer allows no host directory: chart value policy.allowedHostPaths, flag --allowed-host-paths); use hf://, https://, http:// or pvc://"
                    .into(),
            );
        }
        if !normalized_absolute(path) {
            return Err(
                "a file:// path must be absolute, without '.', '..' or empty components".into(),
            );
        }
        let inside = self.allowed_host_paths.iter().any(|dir| {
            let dir = dir.trim_end_matches('/');
            path.strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
        });
        if inside {
            Ok(())
        } else {
            Err(format!(
                "the path is not inside a host directory the operator allows ({:?})",
                self.allowed_host_paths
            ))
        }
    }
}

/// Whether `image` starts with `prefix` at a boundary of its reference: the
/// prefix ends in `/`, `:` or `@`, or the image continues with one of them
/// (or ends), so `registry.example.com` does not allow
/// `registry.example.com.evil.io/x`, nor `team/llorch` `team/llorch-evil`.
fn image_has_prefix(image: &str, prefix: &str) -> bool {
    image.strip_prefix(prefix).is_some_and(|rest| {
        prefix.ends_with(['/', ':', '@']) || rest.is_empty() || rest.starts_with(['/', ':', '@'])
    })
}

/// `/a/b/c`: absolute, and no component empty, `.` or `..`.
fn normalized_absolute(path: &str) -> bool {
    path.strip_prefix('/').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mw(spec: &str) -> ModelWorker {
        serde_yaml::from_str(&format!(
            "apiVersion: llorch.dev/v1alpha1\nkind: ModelWorker\nmetadata: {{name: m, namespace: t}}\nspec: {spec}\n"
        ))
        .expect("a ModelWorker")
    }

    fn policy(paths: &[&str], images: &[&str], sas: &[&str]) -> Policy {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Policy::new(v(paths), v(images), v(sas)).expect("policy")
    }

    #[test]
    fn file_models_are_off_by_default() {
        let errors = Policy::default().check(&mw("{model: {uri: 'file:///srv/m.gguf'}}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("disabled by the operator"), "{errors:?}");
        let https =
            mw("{model: {uri: 'https://x/m.gguf'}, image: 'any/thing:1', serviceAccountName: sa}");
        assert!(Policy::default().check(&https).is_empty());
    }

    #[test]
    fn file_models_must_lie_inside_an_allowed_directory() {
        let p = policy(&["/srv/models/", "/data"], &[], &[]);
        assert_eq!(p.allowed_host_paths, ["/srv/models", "/data"]);
        for ok in ["/srv/models/m.gguf", "/srv/models/a/b.gguf", "/data/x"] {
            let errors = p.check(&mw(&format!("{{model: {{uri: 'file://{ok}'}}}}")));
            assert!(errors.is_empty(), "{ok}: {errors:?}");
        }
        for (bad, why) in [
            ("/etc/shadow", "not inside"),
            ("/srv/models", "not inside"),
            ("/srv/models-private/m.gguf", "not inside"),
            ("/srv/models/../../etc/shadow", "'..'"),
            ("/srv/models/./m.gguf", "'..'"),
            ("/srv/models//m.gguf", "'..'"),
            ("/data/", "'..'"),
        ] {
            let errors = p.check(&mw(&format!("{{model: {{uri: 'file://{bad}'}}}}")));
            assert!(
                errors.len() == 1 && errors[0].contains(why),
                "{bad}: want {why:?}, got {errors:?}"
            );
        }
    }

    #[test]
    fn the_root_directory_allows_every_absolute_path() {
        let p = policy(&["/"], &[], &[]);
        assert!(
            p.check(&mw("{model: {uri: 'file:///etc/m.gguf'}}"))
                .is_empty()
        );
        assert!(!p.check(&mw("{model: {uri: 'file:///a/../b'}}")).is_empty());
    }

    #[test]
    fn allowed_directories_must_be_absolute_and_normalized() {
        for bad in ["", "models", "/a/../b", "/a//b", "./a"] {
            let err = Policy::new(vec![bad.into()], vec![], vec![]);
            assert!(err.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn images_and_service_accounts_are_limited_when_lists_are_given() {
        let p = policy(&[], &["registry.example.com/llorch/"], &["inference"]);
        let ok = mw(
            "{model: {uri: 'https://x/m.gguf'}, image: 'registry.example.com/llorch/worker:1', serviceAccountName: inference}",
        );
        assert!(p.check(&ok).is_empty());
        let defaults = mw("{model: {uri: 'https://x/m.gguf'}}");
        assert!(
            p.check(&defaults).is_empty(),
            "the operator's own images and the default account"
        );
        for (image, ok) in [
            ("registry.example.com/llorch/worker:1", true),
            ("registry.example.com/llorch-evil/worker:1", false),
            ("registry.example.com.evil.io/llorch/worker:1", false),
        ] {
            let spec = format!("{{model: {{uri: 'https://x/m.gguf'}}, image: '{image}'}}");
            let host = policy(&[], &["registry.example.com"], &[]);
            let host_ok = ok || image.starts_with("registry.example.com/");
            assert_eq!(
                host.check(&mw(&spec)).is_empty(),
                host_ok,
                "{image} under a host prefix"
            );
            let path = policy(&[], &["registry.example.com/llorch"], &[]);
            assert_eq!(
                path.check(&mw(&spec)).is_empty(),
                ok,
                "{image} under a path prefix"
            );
        }
        let bad = mw(
            "{model: {uri: 'https://x/m.gguf'}, image: 'evil.example.com/llorch/worker:1', serviceAccountName: admin}",
        );
        let errors = p.check(&bad);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("image \"evil.example.com/llorch/worker:1\" is not allowed"));
        assert!(errors[1].contains("serviceAccountName \"admin\" is not allowed"));
    }
}

//! Where a model comes from: the URI schemes of `spec.model.uri`, turned
//! into a URL to download or a local path to copy.

use anyhow::{Result, bail};
use std::path::{Component, Path, PathBuf};

/// Where `pvc://CLAIM/PATH` claims are mounted (the operator's contract).
pub const PVC_ROOT: &str = "/mnt/pvc";
/// The Hugging Face endpoint `hf://` resolves against; `HF_ENDPOINT`
/// overrides it (a mirror, or a test server).
pub const HF_DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A parsed model URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Download over HTTP(S); `hf://` adds the `HF_TOKEN` bearer.
    Http { url: String, bearer: Option<String> },
    /// Copy a file the pod sees (a mounted claim or a hostPath).
    Local(PathBuf),
}

/// Parses `uri`. `hf_endpoint` and `hf_token` come from the environment
/// (`HF_ENDPOINT`, `HF_TOKEN`); `pvc_root` is [`PVC_ROOT`] outside tests.
pub fn parse(
    uri: &str,
    hf_endpoint: Option<&str>,
    hf_token: Option<&str>,
    pvc_root: &Path,
) -> Result<Source> {
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("model URI {uri:?} contains whitespace or control characters");
    }
    if uri.starts_with("https://") || uri.starts_with("http://") {
        return Ok(Source::Http {
            url: uri.to_owned(),
            bearer: None,
        });
    }
    if let Some(rest) = uri.strip_prefix("hf://") {
        return hf(uri, rest, hf_endpoint, hf_token);
    }
    if let Some(rest) = uri.strip_prefix("pvc://") {
        let Some((claim, path)) = rest.split_once('/') else {
            bail!("model URI {uri:?}: a pvc:// URI is pvc://CLAIM/PATH/IN/CLAIM.gguf");
        };
        if claim.is_empty() || path.is_empty() {
            bail!("model URI {uri:?}: a pvc:// URI is pvc://CLAIM/PATH/IN/CLAIM.gguf");
        }
        let dns = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if claim.len() > 253
            || !claim.chars().all(dns)
            || claim.starts_with(['-', '.'])
            || claim.ends_with(['-', '.'])
            || claim.contains("..")
        {
            bail!(
                "model URI {uri:?}: {claim:?} is not a claim name (lowercase letters, digits, '-' and '.')"
            );
        }
        let rel = safe_relative(uri, path)?;
        return Ok(Source::Local(pvc_root.join(claim).join(rel)));
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if !path.starts_with('/') {
            bail!(
                "model URI {uri:?}: a file:// URI names an absolute path, file:///path/on/node.gguf"
            );
        }
        let rel = safe_relative(uri, &path[1..])?;
        return Ok(Source::Local(Path::new("/").join(rel)));
    }
    bail!(
        "model URI {uri:?} has an unknown scheme: use hf://, https://, http://, pvc:// or file://"
    )
}

/// `hf://ORG/REPO/PATH/FILE.gguf[@REVISION]` → the `resolve` URL.
fn hf(uri: &str, rest: &str, endpoint: Option<&str>, token: Option<&str>) -> Result<Source> {
    let (path, revision) = match rest.rsplit_once('@') {
        Some((p, r)) if !r.is_empty() => (p, r),
        Some(_) => bail!("model URI {uri:?}: the revision after @ is empty"),
        None => (rest, "main"),
    };
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 3
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        bail!("model URI {uri:?}: an hf:// URI is hf://ORG/REPO/PATH/TO/FILE.gguf[@REVISION]");
    }
    if path.contains(['?', '#', '%', '\\']) || revision.contains(['?', '#', '%', '\\']) {
        // `%2e%2e` would be decoded to `..` by the URL parser and climb out
        // of the repository, taking the token along.
        bail!("model URI {uri:?}: ?, #, % and \\ are not allowed in an hf:// URI");
    }
    if revision
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        bail!("model URI {uri:?}: the revision {revision:?} is not a branch, tag or commit");
    }
    let base = endpoint
        .filter(|e| !e.is_empty())
        .unwrap_or(HF_DEFAULT_ENDPOINT)
        .trim_end_matches('/');
    let (repo, file) = (parts[..2].join("/"), parts[2..].join("/"));
    // A branch name may hold slashes (refs/pr/1): percent-encode them.
    let revision = revision.replace('/', "%2F");
    Ok(Source::Http {
        url: format!("{base}/{repo}/resolve/{revision}/{file}"),
        bearer: token.filter(|t| !t.is_empty()).map(str::to_owned),
    })
}

/// `path` as a relative path with no `..`, `.` or root parts, so a URI
/// cannot name a file outside its claim.
fn safe_relative(uri: &str, path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("model URI {uri:?}: the path may not be empty or contain '.' or '..' parts");
    }
    Ok(p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(uri: &str) -> Result<Source> {
        parse(uri, None, None, Path::new(PVC_ROOT))
    }

    #[test]
    fn every_scheme() {
        assert_eq!(
            p("https://example.test/m.gguf").ok(),
            Some(Source::Http {
                url: "https://example.test/m.gguf".into(),
                bearer: None
            })
        );
        assert_eq!(
            p("pvc://models/llama/8b.gguf").ok(),
            Some(Source::Local("/mnt/pvc/models/llama/8b.gguf".into()))
        );
        assert_eq!(
            p("file:///srv/m.gguf").ok(),
            Some(Source::Local("/srv/m.gguf".into()))
        );
        assert_eq!(
            parse(
                "hf://org/repo/sub/m.gguf@v1.0",
                None,
                Some("tok"),
                Path::new("/")
            )
            .ok(),
            Some(Source::Http {
                url: "https://huggingface.co/org/repo/resolve/v1.0/sub/m.gguf".into(),
                bearer: Some("tok".into())
            })
        );
        assert_eq!(
            parse(
                "hf://org/repo/m.gguf@refs/pr/1",
                Some("http://mirror:9/"),
                None,
                Path::new("/")
            )
            .ok(),
            Some(Source::Http {
                url: "http://mirror:9/org/repo/resolve/refs%2Fpr%2F1/m.gguf".into(),
                bearer: None
            })
        );
        assert_eq!(
            parse("hf://org/repo/m.gguf", None, Some(""), Path::new("/")).ok(),
            Some(Source::Http {
                url: "https://huggingface.co/org/repo/resolve/main/m.gguf".into(),
                bearer: None
            })
        );
    }

    #[test]
    fn bad_uris_say_what_is_wrong() {
        for (uri, words) in [
            ("s3://bucket/m.gguf", "unknown scheme"),
            ("pvc://claim", "pvc://CLAIM/PATH"),
            ("pvc://claim/../../etc/shadow", "'..'"),
            ("pvc://../etc/x", "not a claim name"),
            ("pvc://Claim/x.gguf", "not a claim name"),
            ("file://relative/m.gguf", "absolute path"),
            ("file:///a/../b", "'..'"),
            ("hf://org/m.gguf", "hf://ORG/REPO"),
            ("hf://org/repo/m.gguf@", "revision"),
            ("hf://org/repo/m.gguf?x=1", "not allowed"),
            ("hf://org/repo/%2e%2e/%2e%2e/x.gguf", "not allowed"),
            ("hf://org/repo/m.gguf@..", "not a branch"),
            ("hf://org/repo/m.gguf@refs//x", "not a branch"),
            ("https://x/m gguf", "whitespace"),
        ] {
            let e = p(uri).expect_err(uri).to_string();
            assert!(e.contains(words), "{uri}: {e}");
        }
    }
}

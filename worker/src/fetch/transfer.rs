//! Moving the bytes: an HTTP(S) download that resumes a partial file, or a
//! copy of a mounted file, each hashed with SHA-256 as it is written.
//!
//! Both write `PART` (the destination plus `.part`); the caller verifies
//! the hash and renames, so a reader never sees a half-written model.

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, RANGE};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Attempts for one download; each resumes where the last one stopped,
/// after 1, 2, 4, 8 s. Kubernetes restarts a failed fetch anyway.
const ATTEMPTS: u32 = 5;
/// Read size for local copies and for hashing a partial file.
const CHUNK: usize = 1 << 20;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A finished transfer.
#[derive(Debug)]
pub struct Transferred {
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// Copies `src` to `part`, hashing it.
pub fn copy(src: &Path, part: &Path) -> Result<Transferred> {
    let mut input = File::open(src).with_context(|| {
        format!(
            "cannot open {}: is the claim or host path mounted, and the file there?",
            src.display()
        )
    })?;
    let mut out =
        File::create(part).with_context(|| format!("cannot create {}", part.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", src.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", part.display()))?;
        bytes += n as u64;
    }
    out.sync_all()?;
    Ok(Transferred {
        sha256: hex(&hasher.finalize()),
        bytes,
    })
}

/// Downloads `url` to `part`, resuming from what `part` already holds when
/// the server honours a range request, and retrying broken connections.
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    part: &Path,
) -> Result<Transferred> {
    let mut hasher = Sha256::new();
    let mut have = hash_existing(part, &mut hasher)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match fetch_once(client, url, bearer, part, &mut hasher, &mut have).await {
            Ok(()) => {
                return Ok(Transferred {
                    sha256: hex(&hasher.finalize()),
                    bytes: have,
                });
            }
            Err(e) if e.retriable && attempt < ATTEMPTS => {
                let wait = Duration::from_secs(1 << (attempt - 1).min(4));
                tracing::warn!(
                    error = format!("{:#}", e.error),
                    attempt,
                    have,
                    "download interrupted; resuming in {wait:?}"
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.error),
        }
    }
}

struct Failure {
    error: anyhow::Error,
    retriable: bool,
}

fn fatal(error: anyhow::Error) -> Failure {
    Failure {
        error,
        retriable: false,
    }
}

fn retriable(error: anyhow::Error) -> Failure {
    Failure {
        error,
        retriable: true,
    }
}

/// One request: appends to `part` and `hasher`, advancing `have`.
async fn fetch_once(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    part: &Path,
    hasher: &mut Sha256,
    have: &mut u64,
) -> Result<(), Failure> {
    let mut req = client.get(url);
    if let Some(token) = bearer {
        req = req.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    if *have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().await.map_err(|e| {
        // A certificate the client does not trust will not change on retry.
        let tls = is_tls_error(&e);
        let error = anyhow::Error::new(e).context(format!("GET {url}"));
        if tls { fatal(error) } else { retriable(error) }
    })?;
    let status = resp.status();
    let mut out = match status {
        StatusCode::PARTIAL_CONTENT if *have > 0 => {
            let start = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(range_start);
            if start != Some(*have) {
                return Err(fatal(anyhow::anyhow!(
                    "GET {url}: the server answered a range request for bytes {have}- with {start:?}"
                )));
            }
            tracing::info!(have, "resuming a partial download");
            OpenOptions::new().append(true).open(part).map_err(|e| {
                fatal(anyhow::Error::new(e).context(format!("cannot open {}", part.display())))
            })?
        }
        StatusCode::OK => {
            if *have > 0 {
                tracing::info!(have, "the server does not resume; starting over");
            }
            *hasher = Sha256::new();
            *have = 0;
            File::create(part).map_err(|e| {
                fatal(anyhow::Error::new(e).context(format!("cannot create {}", part.display())))
            })?
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            // The partial file is as long as (or longer than) the remote
            // one, or the remote file changed: start over.
            *hasher = Sha256::new();
            *have = 0;
            let _ = std::fs::remove_file(part);
            return Err(retriable(anyhow::anyhow!(
                "GET {url}: 416 on resume; starting over"
            )));
        }
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            return Err(retriable(anyhow::anyhow!("GET {url}: HTTP {s}")));
        }
        s => {
            let hint = match s {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    ": the model needs credentials (spec.model.hfTokenSecretRef for hf://) or they are wrong"
                }
                StatusCode::NOT_FOUND => ": check the URI, the file name and the revision",
                _ => "",
            };
            return Err(fatal(anyhow::anyhow!("GET {url}: HTTP {s}{hint}")));
        }
    };
    let total = resp.content_length().map(|n| n + *have);
    let mut last_log = Instant::now();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                let _ = out.sync_all();
                return Err(retriable(
                    anyhow::Error::new(e).context(format!("GET {url}: body")),
                ));
            }
        };
        hasher.update(&chunk);
        out.write_all(&chunk).map_err(|e| {
            fatal(anyhow::Error::new(e).context(format!("cannot write {}", part.display())))
        })?;
        *have += chunk.len() as u64;
        if last_log.elapsed() >= PROGRESS_EVERY {
            last_log = Instant::now();
            tracing::info!(bytes = *have, total, "downloading");
        }
    }
    out.sync_all().map_err(|e| {
        fatal(anyhow::Error::new(e).context(format!("cannot sync {}", part.display())))
    })?;
    if let Some(total) = total
        && total != *have
    {
        return Err(retriable(anyhow::anyhow!(
            "GET {url}: the connection closed after {have} of {total} bytes"
        )));
    }
    Ok(())
}

/// Whether `e` comes from the TLS layer (an untrusted or invalid
/// certificate). hyper wraps rustls' error in an `io::Error`, whose
/// `source()` skips the wrapped error, so look inside those too.
fn is_tls_error(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<rustls::Error>() {
            return true;
        }
        cause = match c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    false
}

/// Feeds what `part` holds to `hasher`; returns its length (0 when absent).
fn hash_existing(part: &Path, hasher: &mut Sha256) -> Result<u64> {
    let mut f = match File::open(part) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", part.display())),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(n_total)
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn range_start(v: &str) -> Option<u64> {
    v.strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Fails unless `got` equals the expected hash `want` (any case).
pub fn verify(want: Option<&str>, got: &str, uri: &str) -> Result<()> {
    match want {
        Some(w) if !w.eq_ignore_ascii_case(got) => bail!(
            "sha256 mismatch for {uri}: spec.model.sha256 is {w}, the file's is {got}; the file changed or the hash is wrong"
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_and_hex() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes */200"), None);
        assert_eq!(range_start("items 1-2/3"), None);
        // SHA-256 of the empty input.
        assert_eq!(
            hex(&Sha256::new().finalize()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(verify(Some("AB"), "ab", "u").is_ok());
        assert!(verify(None, "ab", "u").is_ok());
        let e = verify(Some("cd"), "ab", "u")
            .expect_err("mismatch")
            .to_string();
        assert!(e.contains("sha256 mismatch"), "{e}");
    }
}

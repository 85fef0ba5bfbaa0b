//! The HTTP(S) download: resumable, hashed as it is written, and safe
//! against mixing bytes of two different files.
//!
//! A partial download (`PART`) carries a small record beside it
//! (`PART.json`: the URI, the server's validator — ETag or Last-Modified —
//! and the total size). A resume sends `Range: bytes=HAVE-` with `If-Range`
//! set to that validator, so a file that changed upstream comes back whole
//! (200) instead of being spliced; a partial file from another URI is
//! discarded. A `206` must start exactly at `HAVE` and the download ends
//! only when the total of `Content-Range` (or `Content-Length` of a `200`)
//! is reached, so a server that caps range sizes is asked again rather
//! than taken for finished. Broken connections and 5xx answers are retried
//! (4 times, after 1, 2, 4 and 8 s); an untrusted certificate or a 4xx is
//! not.

use super::transfer::{Transferred, hash_existing, hex};
use anyhow::{Result, anyhow};
use reqwest::StatusCode;
use reqwest::header::{
    AUTHORIZATION, CONTENT_RANGE, ETAG, HeaderMap, IF_RANGE, LAST_MODIFIED, RANGE,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Attempts after a failure; each resumes where the last one stopped.
const ATTEMPTS: u32 = 5;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What `PART.json` says about the partial file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartRecord {
    uri: String,
    validator: Option<String>,
    total: Option<u64>,
}

/// A download in progress.
struct Download<'a> {
    client: &'a reqwest::Client,
    uri: &'a str,
    url: &'a str,
    bearer: Option<&'a str>,
    part: &'a Path,
    record_path: PathBuf,
    record: PartRecord,
    hasher: Sha256,
    have: u64,
}

/// How one request ended.
enum Step {
    /// Every byte is here.
    Complete,
    /// The server sent a part; ask for the rest at once.
    More,
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

fn retry(error: anyhow::Error) -> Failure {
    Failure {
        error,
        retriable: true,
    }
}

/// Downloads `url` (the resolved form of `uri`) to `part`.
pub async fn download(
    client: &reqwest::Client,
    uri: &str,
    url: &str,
    bearer: Option<&str>,
    part: &Path,
) -> Result<Transferred> {
    let record_path = part.with_extension("part.json");
    let record: PartRecord = std::fs::read(&record_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if record.uri != uri {
        // A partial file of another model (or of unknown origin).
        let _ = std::fs::remove_file(part);
    }
    let mut hasher = Sha256::new();
    let have = hash_existing(part, &mut hasher)?;
    let mut d = Download {
        client,
        uri,
        url,
        bearer,
        part,
        record_path,
        record: PartRecord {
            uri: uri.to_owned(),
            ..record
        },
        hasher,
        have,
    };
    if d.have > 0 && d.record.validator.is_none() {
        // A part from an earlier run without an ETag or Last-Modified:
        // nothing tells whether the file changed since, and resuming could
        // splice two files. Fetch it whole. (Within one run, a dropped
        // connection still resumes.)
        d.start_over();
    }
    let mut failures = 0;
    loop {
        match d.request().await {
            Ok(Step::Complete) => break,
            Ok(Step::More) => failures = 0,
            Err(e) if e.retriable && failures + 1 < ATTEMPTS => {
                let wait = Duration::from_secs(1 << failures.min(4));
                failures += 1;
                tracing::warn!(
                    error = format!("{:#}", e.error),
                    attempt = failures,
                    have = d.have,
                    "download interrupted; resuming in {wait:?}"
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.error),
        }
    }
    let _ = std::fs::remove_file(&d.record_path);
    Ok(Transferred {
        sha256: hex(&d.hasher.finalize()),
        bytes: d.have,
    })
}

impl Download<'_> {
    fn start_over(&mut self) {
        self.hasher = Sha256::new();
        self.have = 0;
        self.record.validator = None;
        self.record.total = None;
        let _ = std::fs::remove_file(self.part);
    }

    fn save_record(&self) -> Result<(), Failure> {
        let bytes = serde_json::to_vec(&self.record).map_err(|e| fatal(e.into()))?;
        std::fs::write(&self.record_path, bytes).map_err(|e| fatal(e.into()))
    }

    async fn request(&mut self) -> Result<Step, Failure> {
        let had = self.have;
        let mut resp = self.send().await?;
        let status = resp.status();
        let validator = validator(resp.headers());
        let Some(mut out) = self.open_output(&resp)? else {
            return Ok(Step::Complete);
        };
        if validator.is_some() {
            self.record.validator = validator;
        }
        self.save_record()?;
        self.receive(&mut resp, &mut out).await?;
        out.sync_all().map_err(|e| fatal(e.into()))?;
        self.step(status, had)
    }

    /// Sends the GET: a range from the bytes already here, with the
    /// validator they came with, so a changed file comes back whole.
    async fn send(&self) -> Result<reqwest::Response, Failure> {
        let url = self.url;
        let mut req = self.client.get(url);
        if let Some(token) = self.bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if self.have > 0 {
            req = req.header(RANGE, format!("bytes={}-", self.have));
            if let Some(v) = &self.record.validator {
                req = req.header(IF_RANGE, v.as_str());
            }
        }
        req.send().await.map_err(|e| {
            // A certificate the client does not trust will not change on retry.
            let tls = is_tls_error(&e);
            let error = anyhow::Error::new(e).context(format!("GET {url}"));
            if tls { fatal(error) } else { retry(error) }
        })
    }

    /// The file to write the answer's body to: the part, appended to for
    /// a range that starts where it ends, or created anew for the whole
    /// file. `None` when the server says every byte is already here.
    fn open_output(&mut self, resp: &reqwest::Response) -> Result<Option<File>, Failure> {
        let url = self.url;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT if self.have > 0 => self.resume(resp.headers()).map(Some),
            StatusCode::OK => {
                if self.have > 0 {
                    tracing::info!(
                        have = self.have,
                        "the server sent the whole file; starting over"
                    );
                }
                self.start_over();
                self.record.total = resp.content_length();
                File::create(self.part)
                    .map(Some)
                    .map_err(|e| fatal(e.into()))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let total = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes */"))
                    .and_then(|t| t.trim().parse::<u64>().ok());
                if total == Some(self.have) && self.have > 0 {
                    // Everything arrived before an interruption.
                    return Ok(None);
                }
                self.start_over();
                Err(retry(anyhow!("GET {url}: 416 on resume; starting over")))
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(retry(anyhow!("GET {url}: HTTP {s}")))
            }
            s => {
                let hint = match s {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        ": the model needs credentials (spec.model.hfTokenSecretRef for hf://) or they are wrong"
                    }
                    StatusCode::NOT_FOUND => ": check the URI, the file name and the revision",
                    _ => "",
                };
                Err(fatal(anyhow!("GET {url}: HTTP {s}{hint}")))
            }
        }
    }

    /// The part opened for appending a `206` answer, which must start where
    /// the part ends and give the size the file had; otherwise the part is
    /// dropped and the download starts over.
    fn resume(&mut self, headers: &HeaderMap) -> Result<File, Failure> {
        let url = self.url;
        let range = headers
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(ContentRange::parse);
        let Some(range) = range.filter(|r| r.start == self.have) else {
            self.start_over();
            return Err(retry(anyhow!(
                "GET {url}: the answer to a range request from byte {} starts elsewhere; starting over",
                self.have
            )));
        };
        if self.record.total.is_some_and(|t| Some(t) != range.total) {
            self.start_over();
            return Err(retry(anyhow!(
                "GET {url}: the file's size changed; starting over"
            )));
        }
        self.record.total = range.total;
        tracing::info!(have = self.have, "resuming a partial download");
        open_append(self.part)
    }

    /// Writes the body to `out` as it arrives, hashing it and logging
    /// progress; a broken body is retriable.
    async fn receive(
        &mut self,
        resp: &mut reqwest::Response,
        out: &mut File,
    ) -> Result<(), Failure> {
        let mut last_log = Instant::now();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let _ = out.sync_all();
                    return Err(retry(
                        anyhow::Error::new(e).context(format!("GET {}: body", self.url)),
                    ));
                }
            };
            self.hasher.update(&chunk);
            out.write_all(&chunk).map_err(|e| fatal(e.into()))?;
            self.have += chunk.len() as u64;
            if last_log.elapsed() >= PROGRESS_EVERY {
                last_log = Instant::now();
                tracing::info!(
                    uri = self.uri,
                    bytes = self.have,
                    total = self.record.total,
                    "downloading"
                );
            }
        }
    }

    /// What the bytes now here make of an answer of `status` that began
    /// with `had` of them.
    fn step(&mut self, status: StatusCode, had: u64) -> Result<Step, Failure> {
        let url = self.url;
        match self.record.total {
            Some(total) if self.have == total => Ok(Step::Complete),
            // A partial answer that added bytes: ask for the rest. One that
            // added none is a failure like a dropped connection, so a
            // server answering empty ranges cannot keep us asking forever.
            Some(total)
                if self.have < total
                    && status == StatusCode::PARTIAL_CONTENT
                    && self.have > had =>
            {
                Ok(Step::More)
            }
            Some(total) if self.have < total => Err(retry(anyhow!(
                "GET {url}: the connection closed after {} of {total} bytes",
                self.have
            ))),
            Some(total) => {
                self.start_over();
                Err(retry(anyhow!(
                    "GET {url}: more bytes than the {total} announced; starting over"
                )))
            }
            // No length given: the end of the body is the end of the file;
            // spec.model.sha256 is the check that matters then.
            None => Ok(Step::Complete),
        }
    }
}

fn open_append(part: &Path) -> Result<File, Failure> {
    OpenOptions::new()
        .append(true)
        .open(part)
        .map_err(|e| fatal(e.into()))
}

/// The strong validator of an answer: its ETag, else its Last-Modified.
fn validator(h: &HeaderMap) -> Option<String> {
    let strong_etag = h
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|e| !e.starts_with("W/"));
    strong_etag
        .or_else(|| h.get(LAST_MODIFIED).and_then(|v| v.to_str().ok()))
        .map(str::to_owned)
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
#[derive(Debug, PartialEq, Eq)]
struct ContentRange {
    start: u64,
    end: u64,
    total: Option<u64>,
}

impl ContentRange {
    fn parse(v: &str) -> Option<ContentRange> {
        let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
        let (start, end) = range.split_once('-')?;
        let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse().ok()?),
        };
        (start <= end && total.is_none_or(|t| end < t)).then_some(ContentRange {
            start,
            end,
            total,
        })
    }
}

/// Whether `e` comes from the TLS layer (an untrusted or invalid
/// certificate). hyper wraps rustls' error in `io::Error`s, whose
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            ContentRange::parse("bytes 100-199/200"),
            Some(ContentRange {
                start: 100,
                end: 199,
                total: Some(200)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 0-9/*"),
            Some(ContentRange {
                start: 0,
                end: 9,
                total: None
            })
        );
        for bad in [
            "bytes */200",
            "items 1-2/3",
            "bytes 5-1/10",
            "bytes 0-10/10",
            "bytes x-1/2",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn weak_etags_are_not_validators() {
        let mut h = HeaderMap::new();
        h.insert(ETAG, "W/\"x\"".parse().expect("header"));
        assert_eq!(validator(&h), None);
        h.insert(
            LAST_MODIFIED,
            "Tue, 01 Jan 2026 00:00:00 GMT".parse().expect("header"),
        );
        assert_eq!(
            validator(&h).as_deref(),
            Some("Tue, 01 Jan 2026 00:00:00 GMT")
        );
        h.insert(ETAG, "\"abc\"".parse().expect("header"));
        assert_eq!(validator(&h).as_deref(), Some("\"abc\""));
    }
}

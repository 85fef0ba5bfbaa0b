//! `llorch-worker fetch` against a real HTTP server on a real port: plain
//! downloads, resume after a partial file and after a dropped connection,
//! the cache, hf:// resolution with a token, file:// copies, hash
//! mismatches, HTTP errors, non-GGUF files, models the worker cannot run
//! and the GPU fit check. Every failure must end stderr with the JSON line
//! the operator reads.

mod common;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// One request as the server saw it: path, Range, Authorization.
type Seen = (String, Option<String>, Option<String>);

#[derive(Clone, Default)]
struct Files {
    bodies: Arc<HashMap<String, Vec<u8>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Files {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// Serves `bodies` by path with single-range support; a path under
/// `/flaky/` drops the connection halfway through its first full answer,
/// and one under `/stalled/` does too, then answers every range request
/// with a `206` that claims the rest and sends no bytes.
async fn serve(
    State(files): State<Files>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let text = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let range = text(header::RANGE);
    let first_flaky = {
        let mut seen = files.seen.lock().expect("lock");
        seen.push((path.clone(), range.clone(), text(header::AUTHORIZATION)));
        (path.starts_with("flaky/") || path.starts_with("stalled/"))
            && seen.iter().filter(|s| s.0 == path).count() == 1
    };
    let Some(body) = files.bodies.get(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    if start >= body.len() && start > 0 {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    if path.starts_with("stalled/") && start > 0 {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let v = format!("bytes {start}-{}/{}", body.len() - 1, body.len());
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, v.parse().expect("header"));
        resp.headers_mut()
            .insert(header::ETAG, "\"v1\"".parse().expect("header"));
        return resp;
    }
    let mut rest = body[start..].to_vec();
    // A server that caps the size of range answers.
    if path.starts_with("capped/") && range.is_some() {
        rest.truncate(100_000);
    }
    let len = rest.len();
    let mut resp = if first_flaky {
        let half = rest[..len / 2].to_vec();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::other("dropped"))];
        Response::new(Body::from_stream(futures::stream::iter(chunks)))
    } else {
        Response::new(Body::from(rest))
    };
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, len.into());
    // A strong validator, so parts from an earlier run may be resumed.
    resp.headers_mut()
        .insert(header::ETAG, "\"v1\"".parse().expect("header"));
    if start > 0 {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let v = format!("bytes {start}-{}/{}", start + len - 1, body.len());
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, v.parse().expect("header"));
    }
    resp
}

/// Runs `serve` with a listener on a free loopback port, on a runtime in a
/// background thread; returns the address.
fn on_free_port<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            serve(listener).await;
        });
    });
    rx.recv().expect("the server started")
}

/// Starts the file server on a free port.
fn start(bodies: HashMap<String, Vec<u8>>) -> (String, Files) {
    let files = Files {
        bodies: Arc::new(bodies),
        ..Files::default()
    };
    let app = Router::new()
        .route("/{*path}", axum::routing::get(serve))
        .with_state(files.clone());
    let addr = on_free_port(|listener| async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (format!("http://{addr}"), files)
}

fn model_bytes(dir: &Path) -> Vec<u8> {
    let path = dir.join("synthetic.gguf");
    common::synth_model(&path);
    std::fs::read(&path).expect("the synthetic model")
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh directory `TMP/llorch-fetch-PID/TEST/NAME`; each test removes
/// its own `TEST` folder at the end (tests run in parallel).
fn tempdir(name: &str) -> PathBuf {
    let d = root(name.split('/').next().unwrap_or(name)).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn root(test: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("llorch-fetch-{}", std::process::id()))
        .join(test)
}

fn fetch(uri: &str, dest: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llorch-worker"))
        .args([
            "fetch",
            "--uri",
            uri,
            "--dest",
            dest.to_str().expect("utf-8"),
        ])
        .args(extra)
        .env_remove("HF_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("fetch runs")
}

/// The JSON line a failed fetch ends with.
fn failure(out: &Output) -> Value {
    assert!(!out.status.success(), "fetch should have failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("last line is not JSON: {stderr}"))
}

fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("fetch prints model.json")
}

/// A server whose range answers never carry a byte must not keep the
/// fetch asking forever: each empty answer counts as a failed attempt.
/// (About 15 s: the waits between the five attempts.)
#[test]
fn empty_range_answers_end_in_a_failure() {
    let work = tempdir("stalled/work");
    let model = model_bytes(&work);
    let (base, files) = start(HashMap::from([("stalled/m.gguf".to_owned(), model)]));
    let dest = tempdir("stalled/dest");
    let out = fetch(&format!("{base}/stalled/m.gguf"), &dest, &[], &[]);
    let f = failure(&out);
    let msg = f["message"].as_str().unwrap_or_default();
    assert!(msg.contains("closed after"), "{f}");
    let seen = files.seen();
    assert_eq!(
        seen.len(),
        5,
        "one full request, then four ranges: {seen:?}"
    );
    assert!(seen[1..].iter().all(|s| s.1.is_some()), "{seen:?}");
    assert!(!dest.join("model.gguf").exists());
    let _ = std::fs::remove_dir_all(root("stalled"));
}

#[test]
fn fetch_end_to_end() {
    let work = tempdir("e2e/work");
    let model = model_bytes(&work);
    let hash = sha(&model);
    let bodies = HashMap::from([
        ("m.gguf".to_owned(), model.clone()),
        ("flaky/m.gguf".to_owned(), model.clone()),
        ("capped/m.gguf".to_owned(), model.clone()),
        ("org/repo/resolve/main/sub/m.gguf".to_owned(), model.clone()),
        (
            "junk.gguf".to_owned(),
            b"definitely not a model".repeat(100),
        ),
    ]);
    let (base, files) = start(bodies);

    // A plain download: the bytes, the hash and model.json.
    let dest = tempdir("e2e/plain");
    let uri = format!("{base}/m.gguf");
    let json = ok(&fetch(
        &uri,
        &dest,
        &["--sha256", &hash.to_uppercase()],
        &[],
    ));
    assert_eq!(
        std::fs::read(dest.join("model.gguf")).expect("model"),
        model
    );
    assert_eq!(json["sha256"], hash.as_str());
    assert_eq!(json["source_uri"], uri.as_str());
    assert_eq!(json["architecture"], "llama");
    assert_eq!(json["size_bytes"], model.len());
    assert!(json["parameters"].as_u64().unwrap_or(0) > 0, "{json}");
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(dest.join("model.json")).expect("json"))
            .expect("json");
    assert_eq!(on_disk, json);
    assert!(!dest.join("model.gguf.part").exists());

    // The same URI again: served from the cache, no request.
    let before = files.seen().len();
    assert_eq!(ok(&fetch(&uri, &dest, &[], &[])), json);
    assert_eq!(
        files.seen().len(),
        before,
        "a cached model is not downloaded again"
    );

    // A partial file of another URI is thrown away, not resumed.
    let dest = tempdir("e2e/other-part");
    std::fs::write(dest.join("model.gguf.part"), b"bytes of some other model").expect("part");
    let other = serde_json::json!({"uri": "http://elsewhere/x.gguf"}).to_string();
    std::fs::write(dest.join("model.gguf.part.json"), other).expect("record");
    assert_eq!(
        ok(&fetch(&uri, &dest, &["--sha256", &hash], &[]))["sha256"],
        hash.as_str()
    );
    assert_eq!(
        files.seen().last().and_then(|s| s.1.clone()),
        None,
        "no range request"
    );
    assert!(!dest.join("model.gguf.part.json").exists());

    // A partial file of this URI is resumed with a range request.
    let dest = tempdir("e2e/resume");
    let record = serde_json::json!({"uri": uri, "validator": "\"v1\""}).to_string();
    std::fs::write(dest.join("model.gguf.part"), &model[..model.len() / 3]).expect("part");
    std::fs::write(dest.join("model.gguf.part.json"), &record).expect("record");
    assert_eq!(
        ok(&fetch(&uri, &dest, &["--sha256", &hash], &[]))["sha256"],
        hash.as_str()
    );
    let want_range = format!("bytes={}-", model.len() / 3);
    assert_eq!(
        files.seen().last().and_then(|s| s.1.clone()),
        Some(want_range)
    );
    assert_eq!(
        std::fs::read(dest.join("model.gguf")).expect("model"),
        model
    );

    // A part from an earlier run that has no validator could belong to an
    // older version of the file: fetched whole, not resumed.
    let dest = tempdir("e2e/no-validator");
    let record = serde_json::json!({"uri": uri}).to_string();
    std::fs::write(dest.join("model.gguf.part"), &model[..model.len() / 3]).expect("part");
    std::fs::write(dest.join("model.gguf.part.json"), &record).expect("record");
    assert_eq!(
        ok(&fetch(&uri, &dest, &["--sha256", &hash], &[]))["sha256"],
        hash.as_str()
    );
    assert_eq!(
        files.seen().last().and_then(|s| s.1.clone()),
        None,
        "no range request"
    );

    // A server that answers ranges 100 kB at a time: asked again until
    // the total of Content-Range is reached.
    let dest = tempdir("e2e/capped");
    let capped = format!("{base}/capped/m.gguf");
    let record = serde_json::json!({"uri": capped, "validator": "\"v1\""}).to_string();
    std::fs::write(dest.join("model.gguf.part"), &model[..1000]).expect("part");
    std::fs::write(dest.join("model.gguf.part.json"), &record).expect("record");
    assert_eq!(
        ok(&fetch(&capped, &dest, &["--sha256", &hash], &[]))["sha256"],
        hash.as_str()
    );
    let asks = files
        .seen()
        .iter()
        .filter(|s| s.0 == "capped/m.gguf")
        .count();
    assert_eq!(
        asks,
        (model.len() - 1000).div_ceil(100_000),
        "one request per capped range"
    );

    // A connection dropped halfway: retried, resumed, whole.
    let dest = tempdir("e2e/flaky");
    let flaky = format!("{base}/flaky/m.gguf");
    assert_eq!(
        ok(&fetch(&flaky, &dest, &["--sha256", &hash], &[]))["sha256"],
        hash.as_str()
    );
    let tries: Vec<_> = files
        .seen()
        .into_iter()
        .filter(|s| s.0 == "flaky/m.gguf")
        .collect();
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert!(
        tries[1]
            .1
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=")),
        "{tries:?}"
    );

    // hf:// resolves against HF_ENDPOINT with the HF_TOKEN bearer.
    let dest = tempdir("e2e/hf");
    let endpoint = [("HF_ENDPOINT", base.as_str()), ("HF_TOKEN", "hf-secret")];
    let json = ok(&fetch("hf://org/repo/sub/m.gguf", &dest, &[], &endpoint));
    assert_eq!(json["source_uri"], "hf://org/repo/sub/m.gguf");
    let last = files.seen().last().cloned().expect("a request");
    assert_eq!(last.0, "org/repo/resolve/main/sub/m.gguf");
    assert_eq!(last.2.as_deref(), Some("Bearer hf-secret"));

    // file:// copies a node path.
    let dest = tempdir("e2e/file");
    let src = work.join("synthetic.gguf");
    let json = ok(&fetch(
        &format!("file://{}", src.display()),
        &dest,
        &[],
        &[],
    ));
    assert_eq!(json["sha256"], hash.as_str());

    // A wrong hash: typed failure, nothing left behind.
    let dest = tempdir("e2e/mismatch");
    let f = failure(&fetch(&uri, &dest, &["--sha256", &"0".repeat(64)], &[]));
    assert_eq!(f["code"], "MODEL_LOAD_FAILED");
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("sha256 mismatch"),
        "{f}"
    );
    assert!(!dest.join("model.gguf").exists() && !dest.join("model.gguf.part").exists());

    // HTTP errors and files that are not models.
    let f = failure(&fetch(
        &format!("{base}/missing.gguf"),
        &tempdir("e2e/404"),
        &[],
        &[],
    ));
    assert!(
        f["message"].as_str().unwrap_or("").contains("HTTP 404"),
        "{f}"
    );
    let f = failure(&fetch(
        &format!("{base}/junk.gguf"),
        &tempdir("e2e/junk"),
        &[],
        &[],
    ));
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a usable GGUF"),
        "{f}"
    );
    let f = failure(&fetch("ftp://x/m.gguf", &tempdir("e2e/scheme"), &[], &[]));
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown scheme"),
        "{f}"
    );
    let f = failure(&fetch(
        "file:///no/such/model.gguf",
        &tempdir("e2e/nofile"),
        &[],
        &[],
    ));
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("cannot open /no/such/model.gguf"),
        "{f}"
    );

    // The fit check: too little GPU memory is INSUFFICIENT_VRAM with the
    // numbers; the file stays cached for the next try.
    let dest = tempdir("e2e/fit");
    let f = failure(&fetch(
        &uri,
        &dest,
        &["--gpu-memory", "1Mi", "--ctx-size", "256"],
        &[],
    ));
    assert_eq!(f["code"], "INSUFFICIENT_VRAM");
    assert_eq!(f["available_bytes"], 1 << 20);
    assert!(
        f["need_bytes"].as_u64().unwrap_or(0) > model.len() as u64,
        "{f}"
    );
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("gpu.memory declares 1 MiB"),
        "{f}"
    );
    assert!(dest.join("model.json").exists());
    ok(&fetch(
        &uri,
        &dest,
        &["--gpu-memory", "24Gi", "--ctx-size", "256"],
        &[],
    ));
    let f = failure(&fetch(&uri, &dest, &["--gpu-memory", "lots"], &[]));
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("is not a memory size"),
        "{f}"
    );
    let _ = std::fs::remove_dir_all(root("e2e"));
}

/// A model the worker cannot run fails with `UNSUPPORTED_MODEL`, naming
/// the architecture, or the type and its tensor, with the supported list:
/// when fetched and when found in the cache. Loading it (`generate` shares
/// `serve`'s load path) names the same reason.
#[test]
fn unsupported_models_fail_with_their_reason() {
    use common::Breakage;
    let work = tempdir("unsupported/work");
    let arch_list = worker_models::architecture_list();
    let type_list = worker_compute::matrix_type_list();
    for (how, words) in [
        (
            Breakage::Mamba,
            [
                "architecture \"mamba\" is not supported",
                arch_list.as_str(),
            ],
        ),
        (
            Breakage::Ternary,
            [
                "tensor \"blk.0.attn_q.weight\" is a matrix of weight type TQ1_0",
                type_list.as_str(),
            ],
        ),
    ] {
        let src = work.join(format!("{how:?}.gguf"));
        common::unsupported_model(&src, how);
        let uri = format!("file://{}", src.display());
        let dest = tempdir(&format!("unsupported/{how:?}"));
        for attempt in ["fetched", "cached"] {
            let f = failure(&fetch(&uri, &dest, &[], &[]));
            assert_eq!(f["code"], "UNSUPPORTED_MODEL", "{attempt}: {f}");
            let msg = f["message"].as_str().unwrap_or_default();
            assert!(
                msg.starts_with(&format!("{uri} cannot be served: ")),
                "{msg}"
            );
            for w in words {
                assert!(msg.contains(w), "{attempt}: {msg}");
            }
            // The file stays in the cache; with its source gone, the next
            // attempt can only have found it there.
            let _ = std::fs::remove_file(&src);
        }
        let cached = dest.join("model.gguf");
        let out = common::worker(&[
            "generate",
            "--model",
            cached.to_str().expect("utf-8"),
            "--prompt",
            "hi",
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words[0]), "{err}");
    }
    let _ = std::fs::remove_dir_all(root("unsupported"));
}

/// A one-shot HTTPS server whose certificate is signed by a private CA:
/// fetch must fail without `--ca-file` and succeed with it.
#[test]
fn https_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempdir("tls/https");
    let model = model_bytes(&dir);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("ca file");

    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let body = model.clone();
    let addr = on_free_port(move |listener| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            // A failed handshake (the first, untrusting fetch) is fine.
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(head.as_bytes()).await;
            let _ = tls.write_all(&body).await;
            let _ = tls.shutdown().await;
        }
    });
    let uri = format!("https://{addr}/m.gguf");

    // An untrusted certificate fails at once, with rustls' reason.
    let f = failure(&fetch(&uri, &tempdir("tls/https-untrusted"), &[], &[]));
    assert_eq!(f["code"], "MODEL_LOAD_FAILED");
    assert!(
        f["message"].as_str().unwrap_or("").contains("certificate"),
        "{f}"
    );
    let dest = tempdir("tls/https-trusted");
    let json = ok(&fetch(
        &uri,
        &dest,
        &["--ca-file", ca_file.to_str().expect("utf-8")],
        &[],
    ));
    assert_eq!(json["sha256"], sha(&model).as_str());
    assert_eq!(
        std::fs::read(dest.join("model.gguf")).expect("model"),
        model
    );
    let _ = std::fs::remove_dir_all(root("tls"));
}

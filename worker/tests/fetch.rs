//! `llorch-worker fetch` downloading, against a real HTTP server on a real
//! port: plain downloads, the cache, resume after a partial file and after
//! a dropped connection, servers that cap or stall range answers, hf://
//! resolution with a token, file:// copies and HTTPS with a private CA.
//! The refusals (hash mismatches, HTTP errors, files that are not models,
//! models the worker cannot run, the GPU fit check) are in
//! `fetch_refusals.rs`.

mod common;

use common::fetch::{failure, fetch, model_bytes, ok, on_free_port, root, sha, start, tempdir};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

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

/// Downloads, the cache, resumes and retries, and the other sources
/// (hf://, file://).
#[test]
fn downloads_resume_and_are_cached() {
    let work = tempdir("download/work");
    let model = model_bytes(&work);
    let hash = sha(&model);
    let bodies = HashMap::from([
        ("m.gguf".to_owned(), model.clone()),
        ("flaky/m.gguf".to_owned(), model.clone()),
        ("capped/m.gguf".to_owned(), model.clone()),
        ("org/repo/resolve/main/sub/m.gguf".to_owned(), model.clone()),
    ]);
    let (base, files) = start(bodies);

    // A plain download: the bytes, the hash and model.json.
    let dest = tempdir("download/plain");
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
    let dest = tempdir("download/other-part");
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
    let dest = tempdir("download/resume");
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
    let dest = tempdir("download/no-validator");
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
    let dest = tempdir("download/capped");
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
    let dest = tempdir("download/flaky");
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
    let dest = tempdir("download/hf");
    let endpoint = [("HF_ENDPOINT", base.as_str()), ("HF_TOKEN", "hf-secret")];
    let json = ok(&fetch("hf://org/repo/sub/m.gguf", &dest, &[], &endpoint));
    assert_eq!(json["source_uri"], "hf://org/repo/sub/m.gguf");
    let last = files.seen().last().cloned().expect("a request");
    assert_eq!(last.0, "org/repo/resolve/main/sub/m.gguf");
    assert_eq!(last.2.as_deref(), Some("Bearer hf-secret"));

    // file:// copies a node path.
    let dest = tempdir("download/file");
    let src = work.join("synthetic.gguf");
    let json = ok(&fetch(
        &format!("file://{}", src.display()),
        &dest,
        &[],
        &[],
    ));
    assert_eq!(json["sha256"], hash.as_str());

    let _ = std::fs::remove_dir_all(root("download"));
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

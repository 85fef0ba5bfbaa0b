//! The CRD copies match the types, and the samples parse as ModelWorkers.

use llorch_api::{ModelWorker, crd_yaml};
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn manifests_crd_is_generated_from_the_types() {
    let generated = crd_yaml().expect("render");
    let committed =
        std::fs::read_to_string(repo().join("manifests/crd.yaml")).expect("manifests/crd.yaml");
    assert!(
        generated == committed,
        "manifests/crd.yaml is out of date: run `make manifests` and commit it"
    );
    assert!(
        !generated.contains("x-kubernetes-validations"),
        "no CEL rules (1.20 servers)"
    );
}

#[test]
fn samples_are_model_workers() {
    let dir = repo().join("manifests/samples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("samples") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in text.split("\n---\n") {
            let value: serde_yaml::Value = serde_yaml::from_str(doc).expect("yaml");
            if value["kind"] == "ModelWorker" {
                let mw: ModelWorker = serde_yaml::from_value(value)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!mw.spec.model.uri.is_empty());
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 3);
}

#[test]
fn defaults_fill_in() {
    let mw: ModelWorker = serde_yaml::from_str(
        "apiVersion: llorch.dev/v1alpha1\nkind: ModelWorker\nmetadata: {name: m}\nspec: {model: {uri: 'file:///m.gguf'}}\n",
    )
    .expect("minimal");
    assert_eq!(mw.spec.replicas, 1);
    assert_eq!(mw.spec.gpu.count, 1);
    assert_eq!(mw.spec.gpu.resource_name, "nvidia.com/gpu");
}

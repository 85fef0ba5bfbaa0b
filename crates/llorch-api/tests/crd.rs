//! The CRD copies (manifests/crd.yaml, the chart's crds/, the CRD inside
//! manifests/install.yaml) match the types, and the samples parse as
//! ModelWorkers.

use llorch_api::{ModelWorker, crd_yaml};
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The chart's copy of the CRD (Helm installs it before the templates).
const CHART_CRD: &str = "charts/llorch-operator/crds/modelworkers.llorch.dev.yaml";

/// The CustomResourceDefinition document of a multi-document YAML file, less
/// the comment lines (`# Source: ...`) that precede it.
fn crd_document(text: &str) -> Option<String> {
    text.split("\n---\n").find_map(|doc| {
        let body: Vec<&str> = doc
            .lines()
            .skip_while(|l| l.starts_with('#') || l.trim().is_empty() || *l == "---")
            .collect();
        body.contains(&"kind: CustomResourceDefinition")
            .then(|| body.join("\n"))
    })
}

/// The CRD has one source, the Rust types: all three copies of it are
/// `llorch-operator crd`'s output (`manifests/crd.yaml`, the chart's
/// `crds/` file, and the CRD document inside `manifests/install.yaml`), so
/// none is edited by hand.
#[test]
fn crd_copies_are_generated_from_the_types() {
    let generated = crd_yaml().expect("render");
    assert!(
        !generated.contains("x-kubernetes-validations"),
        "no CEL rules (1.20 servers)"
    );
    for path in ["manifests/crd.yaml", CHART_CRD] {
        let committed = std::fs::read_to_string(repo().join(path)).expect(path);
        assert!(
            generated == committed,
            "{path} is out of date: run `make manifests` and commit it"
        );
    }
    let install = std::fs::read_to_string(repo().join("manifests/install.yaml"))
        .expect("manifests/install.yaml");
    let inside = crd_document(&install).expect("a CustomResourceDefinition in install.yaml");
    assert!(
        inside.trim_end() == generated.trim_end(),
        "the CRD in manifests/install.yaml is out of date: run `make manifests` and commit it"
    );
}

#[test]
fn crd_document_is_found_after_its_comments() {
    let text = "# header\n---\nkind: Namespace\n---\n# Source: x/crds/c.yaml\napiVersion: v1\nkind: CustomResourceDefinition\n---\nkind: Service\n";
    assert_eq!(
        crd_document(text).as_deref(),
        Some("apiVersion: v1\nkind: CustomResourceDefinition")
    );
    assert_eq!(crd_document("kind: Service\n"), None);
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

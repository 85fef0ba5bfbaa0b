//! validate and build from YAML fixtures: the children a ModelWorker gets.

use llorch_api::ModelWorker;
use llorch_operator::build::{self, BuildConfig};
use llorch_operator::policy::Policy;
use llorch_operator::validate;
use std::path::Path;

fn load_all(path: &Path) -> Vec<ModelWorker> {
    let text = std::fs::read_to_string(path).expect("fixture");
    text.split("\n---\n")
        .filter_map(|doc| {
            let v: serde_yaml::Value = serde_yaml::from_str(doc).expect("yaml");
            (v["kind"] == "ModelWorker").then(|| serde_yaml::from_value(v).expect("a ModelWorker"))
        })
        .map(|mut mw: ModelWorker| {
            mw.metadata.namespace.get_or_insert_with(|| "team-a".into());
            mw.metadata.uid = Some("uid-1".into());
            mw
        })
        .collect()
}

fn sample(file: &str) -> ModelWorker {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/samples")
        .join(file);
    load_all(&path).remove(0)
}

/// Validation under the default policy (no host paths, any image).
fn validate(mw: &ModelWorker) -> Vec<String> {
    validate::validate(mw, &Policy::default())
}

fn cfg() -> BuildConfig {
    BuildConfig {
        worker_image: "llorch/worker:0.1.0".into(),
        worker_cpu_image: "llorch/worker:0.1.0-cpu".into(),
        report_url: "http://10.96.0.10:8081/v1/workers/report".into(),
    }
}

#[test]
fn samples_are_valid() {
    for f in ["cpu-modelworker.yaml", "gpu-modelworker.yaml"] {
        assert!(validate(&sample(f)).is_empty(), "{f}");
    }
    let secured = load_all(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests/samples/two-replicas-secured.yaml"),
    );
    assert!(validate(&secured[0]).is_empty());
}

#[test]
fn every_flag_the_operator_passes_is_refused_in_extra_args() {
    let mw = sample("cpu-modelworker.yaml");
    let managed = build::managed_flags(&mw);
    for flag in [
        "--model",
        "--port",
        "--callback-url",
        "--drain-delay",
        "--shutdown-grace",
        "--log-format",
        "--ctx-size",
        "--parallel",
        "--queue-depth",
        "--api-key-file",
    ] {
        assert!(managed.contains(flag), "{flag} is not among {managed:?}");
    }
    for flag in managed
        .iter()
        .map(String::as_str)
        .chain(["--host", "--worker-id"])
    {
        let mut m = mw.clone();
        m.spec.extra_args = vec![format!("{flag}=1")];
        let errors = validate(&m);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("may not set {flag}"))),
            "{flag}: {errors:?}"
        );
    }
    let mut m = mw;
    m.spec.extra_args = vec!["--kv-type=f32".into(), "--threads".into(), "2".into()];
    assert!(
        validate(&m).is_empty(),
        "flags the operator leaves alone pass"
    );
}

#[test]
fn invalid_specs_say_what_is_wrong() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid-specs.yaml");
    let all = load_all(&path);
    assert_eq!(all.len(), 18);
    for mw in all {
        let expect = mw
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("expect"))
            .cloned()
            .expect("expect");
        let errors = validate(&mw);
        assert!(
            errors.iter().any(|e| e.contains(&expect)),
            "{:?}: want an error containing {expect:?}, got {errors:?}",
            mw.metadata.name
        );
    }
}

#[test]
fn gpu_deployment() {
    let mw = sample("gpu-modelworker.yaml");
    let d = build::deployment(&mw, &cfg()).expect("builds");
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(1));
    let strategy = spec
        .strategy
        .expect("strategy")
        .rolling_update
        .expect("rolling");
    assert_eq!(
        strategy.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
    );
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(pod.runtime_class_name.as_deref(), Some("nvidia"));
    assert_eq!(
        pod.node_selector
            .as_ref()
            .and_then(|n| n.get("nvidia.com/gpu.product"))
            .map(String::as_str),
        Some("NVIDIA-H100-80GB-HBM3")
    );
    let sc = pod.security_context.expect("pod security");
    assert_eq!(sc.run_as_non_root, Some(true));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("llorch/worker:0.1.0"));
    let limits = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .expect("limits");
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    let args = c.args.clone().expect("args");
    for (flag, value) in [
        ("--ctx-size", "8192"),
        ("--parallel", "8"),
        ("--port", "8080"),
    ] {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} in {args:?}"));
        assert_eq!(args[i + 1], value);
    }
    assert!(args.contains(&"http://10.96.0.10:8081/v1/workers/report".to_string()));
    let device = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "LLORCH_DEVICE")
        .and_then(|e| e.value.clone());
    assert_eq!(device.as_deref(), Some("cuda"), "GPU workers ask for CUDA");
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| h.path.clone()),
        Some(Some("/ready".into()))
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| h.path.clone()),
        Some(Some("/health".into()))
    );
    assert_eq!(
        c.startup_probe.as_ref().and_then(|p| p.failure_threshold),
        Some(180)
    );
    let csc = c.security_context.as_ref().expect("container security");
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    let env: Vec<String> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for name in ["POD_NAME", "POD_NAMESPACE", "POD_IP", "LLORCH_MODEL_WORKER"] {
        assert!(env.contains(&name.to_string()), "{name}");
    }
    let mounts: Vec<String> = c
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_path)
        .collect();
    for path in ["/models", "/tmp", "/var/cache/llorch"] {
        assert!(mounts.contains(&path.to_string()), "{path}");
    }
    let init = &pod.init_containers.expect("init")[0];
    let fetch = init.args.clone().expect("fetch args");
    assert_eq!(fetch[0], "fetch");
    assert!(
        fetch
            .windows(2)
            .any(|w| w[0] == "--gpu-memory" && w[1] == "80Gi")
    );
    assert!(
        fetch
            .windows(2)
            .any(|w| w[0] == "--parallel" && w[1] == "8")
    );
    assert_eq!(
        init.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError"),
        "fetch's JSON failure line must reach the operator"
    );
    let owner = &d.metadata.owner_references.expect("owner")[0];
    assert_eq!(owner.kind, "ModelWorker");
    assert_eq!(owner.controller, Some(true));
}

#[test]
fn cpu_deployment_service_and_no_pdb() {
    let mw = sample("cpu-modelworker.yaml");
    let d = build::deployment(&mw, &cfg()).expect("builds");
    let c = &d.spec.expect("spec").template.spec.expect("pod").containers[0];
    assert_eq!(c.image.as_deref(), Some("llorch/worker:0.1.0-cpu"));
    assert!(
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_none_or(|l| !l.contains_key("nvidia.com/gpu"))
    );
    assert!(
        !c.args
            .clone()
            .expect("args")
            .contains(&"--device".to_string())
    );
    let svc = build::service(&mw).expect("service");
    let port = &svc.spec.expect("spec").ports.expect("ports")[0];
    assert_eq!(port.port, 8080);
    assert!(
        build::pod_disruption_budget(&mw, "policy/v1")
            .expect("pdb")
            .is_none()
    );
    assert!(build::network_policy(&mw, &cfg()).expect("np").is_none());
    assert_eq!(
        build::endpoint("gemma-cpu", "team-a", 8080),
        "http://gemma-cpu.team-a.svc:8080"
    );
    let secret = build::callback_secret(&mw, "tok").expect("secret");
    assert_eq!(secret.metadata.name.as_deref(), Some("gemma-cpu-callback"));
}

#[test]
fn secured_two_replicas() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/samples/two-replicas-secured.yaml");
    let mw = load_all(&path).remove(0);
    let pdb = build::pod_disruption_budget(&mw, "policy/v1beta1")
        .expect("pdb")
        .expect("replicas > 1");
    assert_eq!(pdb["apiVersion"], "policy/v1beta1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let np = build::network_policy(&mw, &cfg())
        .expect("np")
        .expect("enabled");
    let spec = np.spec.expect("spec");
    let from = &spec.ingress.clone().expect("ingress")[0]
        .from
        .clone()
        .expect("from")[0];
    assert!(from.namespace_selector.is_some());
    // Egress: DNS, the operator's report port on its pods, 80/443 to fetch.
    assert_eq!(
        spec.policy_types.clone().expect("types"),
        ["Ingress", "Egress"]
    );
    let egress = spec.egress.expect("egress");
    let ports = |i: usize| -> Vec<String> {
        egress[i]
            .ports
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|p| format!("{:?}/{}", p.port, p.protocol.clone().unwrap_or_default()))
            .collect()
    };
    assert_eq!(egress.len(), 3);
    assert_eq!(ports(0), ["Some(Int(53))/UDP", "Some(Int(53))/TCP"]);
    assert_eq!(ports(1), ["Some(Int(8081))/TCP"]);
    let to = &egress[1].to.clone().expect("to")[0];
    assert_eq!(
        to.pod_selector
            .clone()
            .expect("pods")
            .match_labels
            .expect("labels")["app.kubernetes.io/name"],
        "llorch-operator"
    );
    assert_eq!(ports(2), ["Some(Int(80))/TCP", "Some(Int(443))/TCP"]);
    assert!(egress[0].to.is_none() && egress[2].to.is_none());
    let d = build::deployment(&mw, &cfg()).expect("builds");
    let pod = d.spec.expect("spec").template.spec.expect("pod");
    let args = pod.containers[0].args.clone().expect("args");
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--api-key-file" && w[1] == "/var/run/llorch/api-key/key")
    );
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "the worker never calls the API server"
    );
    assert!(
        pod.volumes.expect("volumes").iter().any(|v| v
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.clone())
            == Some("gemma-api-key".into()))
    );
}

fn from_yaml(spec: &str) -> ModelWorker {
    let doc = format!(
        "apiVersion: llorch.dev/v1alpha1\nkind: ModelWorker\nmetadata: {{name: m, namespace: ns, uid: u1}}\nspec:\n{spec}"
    );
    serde_yaml::from_str(&doc).expect("a ModelWorker")
}

fn pod_json(mw: &ModelWorker) -> serde_json::Value {
    let d = build::deployment(mw, &cfg()).expect("deployment");
    serde_json::to_value(d).expect("json")["spec"]["template"]["spec"].clone()
}

#[test]
fn pvc_and_file_models_are_mounted_read_only_for_fetch() {
    let pod = pod_json(&from_yaml(
        "  model: {uri: \"pvc://models/llama/q4.gguf\"}\n",
    ));
    let vol = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "model-source"))
        .expect("source volume");
    assert_eq!(vol["persistentVolumeClaim"]["claimName"], "models");
    assert_eq!(vol["persistentVolumeClaim"]["readOnly"], true);
    let mounts = &pod["initContainers"][0]["volumeMounts"];
    assert!(
        mounts.as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["mountPath"] == "/mnt/pvc/models" && m["readOnly"] == true)),
        "{mounts}"
    );
    let worker_mounts = &pod["containers"][0]["volumeMounts"];
    assert!(
        worker_mounts
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["name"] != "model-source")),
        "only fetch reads the source"
    );

    let pod = pod_json(&from_yaml("  model: {uri: \"file:///srv/m.gguf\"}\n"));
    let vol = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "model-source"))
        .expect("source volume");
    assert_eq!(vol["hostPath"]["path"], "/srv/m.gguf");
    assert_eq!(vol["hostPath"]["type"], "File");

    let pod = pod_json(&from_yaml(
        "  model: {uri: \"https://example.org/m.gguf\"}\n",
    ));
    assert!(
        pod["volumes"]
            .as_array()
            .is_some_and(|v| v.iter().all(|v| v["name"] != "model-source"))
    );
}

#[test]
fn a_sized_cache_becomes_an_owned_claim() {
    let mw = from_yaml(
        "  model: {uri: \"https://example.org/m.gguf\"}\n  cache: {persistentVolumeClaim: {size: 20Gi, storageClassName: fast}}\n",
    );
    let pvc = llorch_operator::storage::cache_claim(&mw)
        .expect("build")
        .expect("a claim");
    assert_eq!(pvc.metadata.name.as_deref(), Some("m-cache"));
    let owner = &pvc.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("ModelWorker", "u1")
    );
    let spec = pvc.spec.expect("spec");
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    let pod = pod_json(&mw);
    let cache = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "model-cache"))
        .expect("cache volume");
    assert_eq!(cache["persistentVolumeClaim"]["claimName"], "m-cache");

    let existing = from_yaml(
        "  model: {uri: \"https://example.org/m.gguf\"}\n  cache: {persistentVolumeClaim: {claimName: shared}}\n",
    );
    assert!(
        llorch_operator::storage::cache_claim(&existing)
            .expect("build")
            .is_none()
    );
}

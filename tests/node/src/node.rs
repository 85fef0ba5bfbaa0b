//! The Node object: registration with capacity (GPUs included), and the
//! upkeep a kubelet does — renewing the Lease in `kube-node-lease` and the
//! `Ready` heartbeat — so the node-lifecycle controller never taints it.

use crate::config::Args;
use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;

const HEARTBEAT: Duration = Duration::from_secs(10);
const KUBELET_VERSION: &str = "v1.20.2";

fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(Timestamp::now())
        .to_string()
}

/// The node's conditions; `transition` only at registration, so the
/// heartbeat does not move `lastTransitionTime`.
fn conditions(at: &str, transition: bool) -> Value {
    let c = |t: &str, s: &str, reason: &str, msg: &str| {
        let mut v = json!({ "type": t, "status": s, "reason": reason, "message": msg, "lastHeartbeatTime": at });
        if transition {
            v["lastTransitionTime"] = json!(at);
        }
        v
    };
    json!([
        c(
            "Ready",
            "True",
            "KubeletReady",
            "llorch-node (a test node, not a kubelet) is running pods as processes"
        ),
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "no pressure"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "no pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "no pressure"
        ),
    ])
}

/// Creates the Node, or takes over one of that name, and sets its status.
pub async fn register(client: &kube::Client, args: &Args) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": args.name,
            "labels": {
                "kubernetes.io/hostname": args.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.product": args.gpu_product,
                "nvidia.com/gpu.count": args.gpus.to_string(),
                "llorch.dev/process-node": "true",
            },
        },
        "spec": { "podCIDR": format!("{}/24", net_of(args)) },
    }))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("cannot create the Node"),
    }
    let resources = json!({
        "cpu": args.cpu,
        "memory": args.memory,
        "pods": args.max_pods.to_string(),
        "nvidia.com/gpu": args.gpus.to_string(),
    });
    let at = now();
    let status = json!({
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions(&at, true),
            "addresses": [
                { "type": "InternalIP", "address": args.host_ip.to_string() },
                { "type": "Hostname", "address": args.name },
            ],
            "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
            "nodeInfo": {
                "machineID": "llorch-node", "systemUUID": "llorch-node", "bootID": "llorch-node",
                "kernelVersion": kernel(), "osImage": "llorch test node",
                "containerRuntimeVersion": "llorch-node://processes",
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux", "architecture": "amd64",
            },
        }
    });
    nodes
        .patch_status(&args.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("cannot set the Node's status")?;
    Ok(())
}

/// Renews the Lease and the Ready heartbeat forever.
pub async fn heartbeat(client: kube::Client, name: String) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        let at = now();
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": name, "namespace": "kube-node-lease" },
            "spec": {
                "holderIdentity": name,
                "leaseDurationSeconds": 40,
                "renewTime": micro_time(Timestamp::now()),
            },
        });
        let pp = PatchParams::apply("llorch-node").force();
        if let Err(e) = leases.patch(&name, &pp, &Patch::Apply(&lease)).await {
            tracing::warn!(error = %e, "cannot renew the node lease");
        }
        let status = json!({ "status": { "conditions": conditions(&at, false) } });
        if let Err(e) = nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
            .await
        {
            tracing::warn!(error = %e, "cannot post the node heartbeat");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// A `MicroTime`: exactly six fractional digits, as the 1.20 API server
/// insists.
fn micro_time(t: Timestamp) -> String {
    format!(
        "{}.{:06}Z",
        t.strftime("%Y-%m-%dT%H:%M:%S"),
        t.subsec_microsecond()
    )
}

/// `a.b.c.0` of the host's /24.
pub fn net_of(args: &Args) -> std::net::Ipv4Addr {
    let [a, b, c, _] = args.host_ip.octets();
    std::net::Ipv4Addr::new(a, b, c, 0)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

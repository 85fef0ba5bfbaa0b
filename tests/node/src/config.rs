//! The node's command line, and the map from container images to the local
//! binaries that stand in for them.

use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "llorch-node", version, about)]
pub struct Args {
    /// Kubeconfig of a user that may manage nodes, leases and pods.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// The Node's name.
    #[arg(long, default_value = "llorch-node-0")]
    pub name: String,
    /// `nvidia.com/gpu` the node advertises (it has none: containers that
    /// ask for one get LLORCH_DEVICE=cpu).
    #[arg(long, default_value_t = 2)]
    pub gpus: u32,
    /// The `nvidia.com/gpu.product` label.
    #[arg(long, default_value = "NVIDIA-H100-80GB-HBM3")]
    pub gpu_product: String,
    /// CPU capacity (a quantity).
    #[arg(long, default_value = "16")]
    pub cpu: String,
    /// Memory capacity (a quantity).
    #[arg(long, default_value = "64Gi")]
    pub memory: String,
    /// Pod capacity.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// IMAGE=BINARY: containers whose image repository ends in IMAGE (any
    /// registry, any tag) run BINARY. Repeatable.
    #[arg(long = "image", value_parser = parse_image)]
    pub images: Vec<(String, PathBuf)>,
    /// Where pod directories (volumes, logs) live.
    #[arg(long, default_value = "/var/lib/llorch-node")]
    pub state_dir: PathBuf,
    /// The bridge pods attach to (made by the cluster script).
    #[arg(long, default_value = "llorch0")]
    pub bridge: String,
    /// The host's address on the bridge: pods' gateway, the node's IP.
    #[arg(long, default_value = "10.244.0.1")]
    pub host_ip: Ipv4Addr,
    /// First host number pods get in the host's /24.
    #[arg(long, default_value_t = 10)]
    pub first_pod_ip: u8,
    /// Last host number pods get.
    #[arg(long, default_value_t = 250)]
    pub last_pod_ip: u8,
}

fn parse_image(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((image, bin)) if !image.is_empty() && !bin.is_empty() => {
            Ok((image.to_owned(), PathBuf::from(bin)))
        }
        _ => Err(format!("--image {s:?}: use IMAGE=BINARY")),
    }
}

/// The repository part of an image reference: no tag, no digest.
/// `registry:5000/llorch/worker:0.1.0-cpu` → `registry:5000/llorch/worker`.
pub fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// The binary that runs `image`, if one is mapped.
pub fn binary_for<'a>(images: &'a [(String, PathBuf)], image: &str) -> Option<&'a PathBuf> {
    let repo = repository(image);
    images
        .iter()
        .find(|(name, _)| repo == name || repo.ends_with(&format!("/{name}")))
        .map(|(_, bin)| bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_match_by_repository_suffix() {
        let map = vec![("llorch/worker".to_owned(), PathBuf::from("/w"))];
        for image in [
            "llorch/worker",
            "llorch/worker:0.1.0",
            "llorch/worker:0.1.0-cpu",
            "registry.local:5000/llorch/worker:1",
            "llorch/worker@sha256:abc",
        ] {
            assert_eq!(
                binary_for(&map, image),
                Some(&PathBuf::from("/w")),
                "{image}"
            );
        }
        for image in ["llorch/workers", "other/worker", "nginx"] {
            assert_eq!(binary_for(&map, image), None, "{image}");
        }
        assert_eq!(repository("registry:5000/a/b"), "registry:5000/a/b");
    }
}

//! Probes as kubelet runs them: `httpGet` (a status in 200..400), a
//! `tcpSocket` connect, or an `exec` command inside the container's
//! namespaces (through `nsenter`), each with its timeout.

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A named or numbered port of `c`.
fn port(c: &Container, p: &IntOrString) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

/// Runs `probe` once; `Ok(())` is success, `Err` says why not.
pub async fn run(probe: &Probe, c: &Container, ip: Ipv4Addr, pid: u32) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let work = async {
        if let Some(h) = &probe.http_get {
            let port = port(c, &h.port).ok_or("unknown probe port")?;
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            let mut s = TcpStream::connect(SocketAddr::from((ip, port)))
                .await
                .map_err(|e| e.to_string())?;
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.20\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.map_err(|e| e.to_string())?;
            let code: u16 = std::str::from_utf8(&head[9..12])
                .ok()
                .and_then(|c| c.parse().ok())
                .ok_or("bad HTTP answer")?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        } else if let Some(t) = &probe.tcp_socket {
            let port = port(c, &t.port).ok_or("unknown probe port")?;
            TcpStream::connect(SocketAddr::from((ip, port)))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else if let Some(e) = &probe.exec {
            let status = exec(pid, e.command.as_deref().unwrap_or_default()).await?;
            if status == 0 {
                Ok(())
            } else {
                Err(format!("command exited {status}"))
            }
        } else {
            Err("probe has no handler".into())
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout after {timeout:?}")),
    }
}

/// Runs `cmd` in the mount and network namespaces of process `pid`.
pub async fn exec(pid: u32, cmd: &[String]) -> Result<i32, String> {
    if cmd.is_empty() {
        return Err("empty command".into());
    }
    let status = tokio::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "-n", "--"])
        .args(cmd)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status.code().unwrap_or(-1))
}

//! One container as one process: started with `ip netns exec` in the pod's
//! network namespace (which also gives it a private mount namespace), where
//! a short shell prologue bind-mounts the pod's volumes at their paths and
//! then `exec`s the binary the image maps to. stdout and stderr go to a
//! log file per container (there is no `kubectl logs`: see the README).

use crate::volumes::Mount;
use anyhow::{Context, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// What to run.
#[derive(Debug, Clone)]
pub struct Launch {
    pub netns: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub working_dir: Option<String>,
    pub log: PathBuf,
}

/// A running container.
#[derive(Debug)]
pub struct Running {
    pub child: Child,
    pub pid: u32,
    /// Where this run's output starts in the log file.
    pub log_offset: u64,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell prologue: bind mounts (parents first), read-only remounts,
/// the working directory, then exec.
fn script(l: &Launch) -> String {
    let mut mounts = l.mounts.clone();
    mounts.sort_by_key(|m| m.target.components().count());
    let mut s = String::from("set -e\n");
    for m in &mounts {
        let (src, dst) = (
            quote(&m.source.to_string_lossy()),
            quote(&m.target.to_string_lossy()),
        );
        // A target inside an earlier mount exists only in that volume.
        let make = if m.source.is_file() {
            format!("touch {dst}")
        } else {
            format!("mkdir -p {dst}")
        };
        s.push_str(&format!("[ -e {dst} ] || {make}\n"));
        s.push_str(&format!("mount --bind {src} {dst}\n"));
        if m.read_only {
            s.push_str(&format!("mount -o remount,bind,ro {dst}\n"));
        }
    }
    if let Some(wd) = &l.working_dir {
        s.push_str(&format!("cd {}\n", quote(wd)));
    }
    s.push_str("exec \"$@\"\n");
    s
}

/// Creates each mount target on the host (an empty directory, or an empty
/// file for a file source); returns the paths it created, for removal at
/// node shutdown.
pub fn make_targets(mounts: &[Mount]) -> Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    for m in mounts {
        if m.target.exists() {
            continue;
        }
        // Everything from the first missing ancestor down is the node's.
        let mut missing = vec![m.target.clone()];
        while let Some(parent) = missing.last().and_then(|p| p.parent()) {
            if parent.exists() {
                break;
            }
            missing.push(parent.to_path_buf());
        }
        if m.source.is_file() {
            if let Some(parent) = m.target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&m.target, b"")?;
        } else {
            std::fs::create_dir_all(&m.target)
                .with_context(|| format!("cannot create mount point {}", m.target.display()))?;
        }
        created.extend(missing);
    }
    Ok(created)
}

pub fn start(l: &Launch) -> Result<Running> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)
        .with_context(|| format!("cannot open {}", l.log.display()))?;
    let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let err = log.try_clone()?;
    let mut cmd = Command::new(crate::net::ip_binary());
    cmd.args([
        "netns",
        "exec",
        &l.netns,
        "/bin/sh",
        "-c",
        &script(l),
        "llorch-container",
    ])
    .arg(&l.program)
    .args(&l.args)
    .env_clear()
    .envs(l.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    .stdin(Stdio::null())
    .stdout(Stdio::from(log))
    .stderr(Stdio::from(err))
    .process_group(0);
    // A node task that dies must not leave its containers running.
    cmd.kill_on_drop(true);
    let child = cmd.spawn().context("cannot start the container process")?;
    let pid = child.id().unwrap_or(0);
    Ok(Running {
        child,
        pid,
        log_offset,
    })
}

/// Sends `sig` to the container's process group.
pub fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill(2) on a process group this node started.
        unsafe { libc::kill(-pid, sig) };
    }
}

/// What a run left in the log: its last 80 lines, at most 2048 bytes (the
/// message kubelet keeps with `FallbackToLogsOnError`).
pub fn last_words(log: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = offset.max(len.saturating_sub(2048));
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.take(2048).read_to_end(&mut buf);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prologue_mounts_parents_first_and_quotes() {
        let l = Launch {
            netns: "n".into(),
            program: "/bin/true".into(),
            args: vec![],
            env: vec![],
            mounts: vec![
                Mount {
                    source: "/s/a b".into(),
                    target: "/x/y".into(),
                    read_only: true,
                },
                Mount {
                    source: "/s/it's".into(),
                    target: "/x".into(),
                    read_only: false,
                },
            ],
            working_dir: Some("/x".into()),
            log: "/dev/null".into(),
        };
        assert_eq!(
            script(&l),
            "set -e\n[ -e '/x' ] || mkdir -p '/x'\nmount --bind '/s/it'\\''s' '/x'\n[ -e '/x/y' ] || mkdir -p '/x/y'\nmount --bind '/s/a b' '/x/y'\nmount -o remount,bind,ro '/x/y'\ncd '/x'\nexec \"$@\"\n"
        );
    }
}

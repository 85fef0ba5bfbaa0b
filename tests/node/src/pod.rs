//! The life of one pod on the node: network namespace and address, volumes,
//! init containers in order, then the containers with restarts, probes and
//! status, and finally a graceful stop when the pod is deleted.

use crate::container::{self, Launch, Running};
use crate::volumes::{self, Mount};
use crate::{Ctx, env, net, probe};
use anyhow::Result;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const TICK: Duration = Duration::from_millis(500);
/// Restart back-off: kubelet's doubling, but from 2 s to 40 s, so tests
/// see a crash loop quickly.
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(40);

fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(Timestamp::now())
        .to_string()
}

#[derive(Debug, Clone)]
struct Term {
    exit_code: i32,
    reason: String,
    message: String,
    started_at: String,
    finished_at: String,
}

impl Term {
    fn json(&self) -> Value {
        let mut v = json!({
            "exitCode": self.exit_code, "reason": self.reason,
            "startedAt": self.started_at, "finishedAt": self.finished_at,
        });
        if !self.message.is_empty() {
            v["message"] = json!(self.message);
        }
        v
    }
}

#[derive(Debug, Default)]
struct ProbeState {
    next: Option<Instant>,
    successes: i32,
    failures: i32,
}

#[derive(Debug)]
struct Ctr {
    spec: Container,
    running: Option<Running>,
    started_at: String,
    started_instant: Option<Instant>,
    restarts: i32,
    last: Option<Term>,
    /// Terminated for good (an init container that completed, or a
    /// container its restart policy does not restart).
    finished: Option<Term>,
    next_start: Option<Instant>,
    backoff: Duration,
    waiting: (String, String),
    ready: bool,
    started: bool,
    startup: ProbeState,
    liveness: ProbeState,
    readiness: ProbeState,
}

impl Ctr {
    fn new(spec: Container) -> Ctr {
        Ctr {
            spec,
            running: None,
            started_at: String::new(),
            started_instant: None,
            restarts: 0,
            last: None,
            finished: None,
            next_start: None,
            backoff: BACKOFF_FIRST,
            waiting: ("ContainerCreating".into(), String::new()),
            ready: false,
            started: false,
            startup: ProbeState::default(),
            liveness: ProbeState::default(),
            readiness: ProbeState::default(),
        }
    }

    fn status(&self, image_id: &str) -> Value {
        let state = if self.running.is_some() {
            json!({ "running": { "startedAt": self.started_at } })
        } else if let Some(t) = &self.finished {
            json!({ "terminated": t.json() })
        } else {
            let mut w = json!({ "reason": self.waiting.0 });
            if !self.waiting.1.is_empty() {
                w["message"] = json!(self.waiting.1);
            }
            json!({ "waiting": w })
        };
        let mut v = json!({
            "name": self.spec.name,
            "image": self.spec.image.clone().unwrap_or_default(),
            "imageID": image_id,
            "ready": self.ready,
            "started": self.running.is_some() && self.started,
            "restartCount": self.restarts,
            "state": state,
            "lastState": self.last.as_ref().map(|t| json!({ "terminated": t.json() })).unwrap_or(json!({})),
        });
        if let Some(r) = &self.running {
            v["containerID"] = json!(format!("llorch-node://{}", r.pid));
        }
        v
    }
}

/// The restart policy's verdict on an exit.
fn restarts(policy: &str, exit_code: i32, init: bool) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        // Always: an init container that succeeded is done.
        _ => !(init && exit_code == 0),
    }
}

struct PodRun {
    ctx: Arc<Ctx>,
    pod: Pod,
    ns: String,
    name: String,
    uid: String,
    dir: PathBuf,
    netns: String,
    ip: Option<Ipv4Addr>,
    volumes: Option<BTreeMap<String, PathBuf>>,
    volume_error: String,
    init: Vec<Ctr>,
    main: Vec<Ctr>,
    policy: String,
    start_time: String,
    last_status: Value,
}

/// Runs `pod` until it is deleted (gracefully), disappears, or the node
/// stops (`stop` turns true: processes are killed, the pod is left as is).
pub async fn run(
    ctx: Arc<Ctx>,
    mut rx: watch::Receiver<Option<Pod>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(pod) = rx.borrow().clone() else {
        return;
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut p = PodRun {
        ns: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        dir: ctx.args.state_dir.join("pods").join(format!(
            "{}_{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or(""),
            uid
        )),
        netns: net::netns_name(&uid),
        uid,
        ip: None,
        volumes: None,
        volume_error: String::new(),
        init: spec
            .init_containers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(Ctr::new)
            .collect(),
        main: spec.containers.clone().into_iter().map(Ctr::new).collect(),
        policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        start_time: now(),
        last_status: Value::Null,
        ctx,
        pod,
    };
    if matches!(
        p.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return;
    }
    let _ = std::fs::create_dir_all(p.dir.join("logs"));
    tracing::info!(pod = %format!("{}/{}", p.ns, p.name), "starting pod");
    loop {
        if *stop.borrow() {
            p.kill_all().await;
            p.teardown();
            return;
        }
        let latest = rx.borrow_and_update().clone();
        match latest {
            None => {
                p.kill_all().await;
                p.teardown();
                return;
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                p.pod = pod;
                p.graceful_stop(&mut rx, &mut stop).await;
                p.teardown();
                p.finalize_delete().await;
                return;
            }
            Some(pod) => p.pod = pod,
        }
        if let Err(e) = p.step().await {
            tracing::warn!(pod = %p.name, error = %e, "pod step failed");
        }
        p.push_status().await;
        // A pod that has finished for good gives its address back; its
        // status and logs stay until it is deleted.
        if p.ip.is_some() && p.terminal() {
            p.kill_all().await;
            p.teardown();
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = rx.changed() => {}
            _ = stop.changed() => {}
        }
    }
}

impl PodRun {
    async fn step(&mut self) -> Result<()> {
        if self.terminal() {
            return Ok(());
        }
        if self.ip.is_none() {
            let ip = self.ctx.pool.take()?;
            if let Err(e) = net::create(
                &self.netns,
                ip,
                self.ctx.args.host_ip,
                &self.ctx.args.bridge,
            ) {
                self.ctx.pool.give_back(ip);
                return Err(e);
            }
            self.ip = Some(ip);
        }
        if self.volumes.is_none() {
            match volumes::prepare(
                &self.ctx.client,
                &self.pod,
                &self.dir,
                &self.ctx.args.state_dir,
            )
            .await
            {
                Ok(v) => {
                    self.volumes = Some(v);
                    self.volume_error.clear();
                }
                Err(e) => {
                    self.volume_error = format!("{e:#}");
                    return Ok(());
                }
            }
        }
        // Init containers, one at a time, in order.
        let policy = self.policy.clone();
        for i in 0..self.init.len() {
            if self.init[i]
                .finished
                .as_ref()
                .is_some_and(|t| t.exit_code == 0)
            {
                continue;
            }
            if self.init[i].finished.is_some() {
                return Ok(()); // failed for good: the pod fails
            }
            self.tick_container(true, i, &policy).await;
            return Ok(());
        }
        for i in 0..self.main.len() {
            self.tick_container(false, i, &policy).await;
        }
        Ok(())
    }

    fn ctr(&mut self, init: bool, i: usize) -> &mut Ctr {
        if init {
            &mut self.init[i]
        } else {
            &mut self.main[i]
        }
    }

    async fn tick_container(&mut self, init: bool, i: usize, policy: &str) {
        let grace = self.grace();
        // Exited?
        let exited = match self.ctr(init, i).running.as_mut() {
            Some(r) => r.child.try_wait().ok().flatten(),
            None => None,
        };
        if let Some(status) = exited {
            use std::os::unix::process::ExitStatusExt;
            // What it started lives on in its process group: end it too,
            // as kubelet ends the container's cgroup.
            if let Some(r) = self.ctr(init, i).running.as_ref() {
                container::signal(r.pid, libc::SIGKILL);
            }
            let code = status
                .code()
                .or(status.signal().map(|s| 128 + s))
                .unwrap_or(137);
            self.on_exit(init, i, code, policy);
        }
        if self.ctr(init, i).running.is_none() {
            if self.ctr(init, i).finished.is_some() {
                return;
            }
            let due = self
                .ctr(init, i)
                .next_start
                .is_none_or(|t| Instant::now() >= t);
            if due {
                self.start(init, i).await;
            }
            return;
        }
        if init {
            return;
        }
        // Probes of a running container.
        let ip = self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let c = &mut self.main[i];
        let pid = c.running.as_ref().map(|r| r.pid).unwrap_or(0);
        let since = c.started_instant.unwrap_or_else(Instant::now);
        if !c.started {
            match c.spec.startup_probe.clone() {
                None => c.started = true,
                Some(p) => match due_probe(&p, &mut c.startup, since, &c.spec, ip, pid).await {
                    Some(true) => c.started = true,
                    Some(false) if c.startup.failures >= p.failure_threshold.unwrap_or(3) => {
                        tracing::info!(container = %c.spec.name, "startup probe failed; restarting");
                        self.kill(false, i, grace.min(Duration::from_secs(10)))
                            .await;
                        return;
                    }
                    _ => {}
                },
            }
        }
        let c = &mut self.main[i];
        if !c.started {
            c.ready = false;
            return;
        }
        if let Some(p) = c.spec.liveness_probe.clone()
            && due_probe(&p, &mut c.liveness, since, &c.spec, ip, pid).await == Some(false)
            && c.liveness.failures >= p.failure_threshold.unwrap_or(3)
        {
            tracing::info!(container = %c.spec.name, "liveness probe failed; restarting");
            self.kill(false, i, grace.min(Duration::from_secs(10)))
                .await;
            return;
        }
        let c = &mut self.main[i];
        match c.spec.readiness_probe.clone() {
            None => c.ready = true,
            Some(p) => match due_probe(&p, &mut c.readiness, since, &c.spec, ip, pid).await {
                Some(true) if c.readiness.successes >= p.success_threshold.unwrap_or(1) => {
                    c.ready = true
                }
                Some(false) if c.readiness.failures >= p.failure_threshold.unwrap_or(3) => {
                    c.ready = false
                }
                _ => {}
            },
        }
    }

    fn on_exit(&mut self, init: bool, i: usize, code: i32, policy: &str) {
        let log = self.log_path(init, i);
        let c = self.ctr(init, i);
        let Some(r) = c.running.take() else { return };
        let message = if code != 0
            && c.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
        {
            container::last_words(&log, r.log_offset)
        } else {
            String::new()
        };
        let term = Term {
            exit_code: code,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message,
            started_at: c.started_at.clone(),
            finished_at: now(),
        };
        c.ready = false;
        c.started = false;
        c.startup = ProbeState::default();
        c.liveness = ProbeState::default();
        c.readiness = ProbeState::default();
        tracing::info!(container = %c.spec.name, code, "container exited");
        if restarts(policy, code, init) {
            // A run of 10 minutes resets the back-off, as in kubelet.
            if c.started_instant
                .is_some_and(|t| t.elapsed() > Duration::from_secs(600))
            {
                c.backoff = BACKOFF_FIRST;
            }
            c.restarts += 1;
            c.last = Some(term);
            c.next_start = Some(Instant::now() + c.backoff);
            c.waiting = (
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container={}",
                    c.backoff.as_secs(),
                    c.spec.name
                ),
            );
            c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
        } else {
            c.finished = Some(term);
        }
    }

    fn log_path(&self, init: bool, i: usize) -> PathBuf {
        let c = if init { &self.init[i] } else { &self.main[i] };
        self.dir.join("logs").join(format!("{}.log", c.spec.name))
    }

    async fn start(&mut self, init: bool, i: usize) {
        match self.launch(init, i).await {
            Ok(l) => match container::start(&l) {
                Ok(r) => {
                    let c = self.ctr(init, i);
                    c.running = Some(r);
                    c.started_at = now();
                    c.started_instant = Some(Instant::now());
                    c.waiting = (String::new(), String::new());
                }
                Err(e) => {
                    let c = self.ctr(init, i);
                    c.waiting = ("CreateContainerError".into(), format!("{e:#}"));
                    c.next_start = Some(Instant::now() + BACKOFF_FIRST);
                }
            },
            Err(Failure(reason, msg)) => {
                let c = self.ctr(init, i);
                c.waiting = (reason.into(), msg);
                c.next_start = Some(Instant::now() + BACKOFF_FIRST);
            }
        }
    }

    async fn launch(&mut self, init: bool, i: usize) -> Result<Launch, Failure> {
        let spec = if init {
            self.init[i].spec.clone()
        } else {
            self.main[i].spec.clone()
        };
        let image = spec.image.clone().unwrap_or_default();
        let mapped = crate::config::binary_for(&self.ctx.args.images, &image).cloned();
        // The downward API sees the address this node gave the pod even
        // before the status carrying it is written.
        let mut pod = self.pod.clone();
        let st = pod.status.get_or_insert_with(Default::default);
        st.pod_ip = self.ip.map(|ip| ip.to_string());
        st.host_ip = Some(self.ctx.args.host_ip.to_string());
        let env = env::build(&self.ctx.client, &pod, &spec, "nvidia.com/gpu")
            .await
            .map_err(|e| Failure("CreateContainerConfigError", format!("{e:#}")))?;
        let expand = |v: &Vec<String>| v.iter().map(|a| env::expand(a, &env)).collect::<Vec<_>>();
        let (program, args) = match (spec.command.as_ref().filter(|c| !c.is_empty()), mapped) {
            (Some(cmd), _) => {
                let cmd = expand(cmd);
                let mut args = cmd[1..].to_vec();
                args.extend(expand(&spec.args.clone().unwrap_or_default()));
                (PathBuf::from(&cmd[0]), args)
            }
            (None, Some(bin)) => (bin, expand(&spec.args.clone().unwrap_or_default())),
            (None, None) => {
                return Err(Failure(
                    "ErrImagePull",
                    format!(
                        "image {image:?} is not mapped to a binary on this test node (llorch-node --image)"
                    ),
                ));
            }
        };
        let vols = self.volumes.clone().unwrap_or_default();
        let mut mounts = Vec::new();
        for m in spec.volume_mounts.iter().flatten() {
            let Some(src) = vols.get(&m.name) else {
                return Err(Failure(
                    "CreateContainerConfigError",
                    format!("volume {:?} not found", m.name),
                ));
            };
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => src.join(sub),
                None => src.clone(),
            };
            mounts.push(Mount {
                source,
                target: PathBuf::from(&m.mount_path),
                read_only: m.read_only.unwrap_or(false),
            });
        }
        match container::make_targets(&mounts) {
            Ok(created) => self.ctx.remember_created(created),
            Err(e) => return Err(Failure("CreateContainerError", format!("{e:#}"))),
        }
        Ok(Launch {
            netns: self.netns.clone(),
            program,
            args,
            env,
            mounts,
            working_dir: spec.working_dir.clone(),
            log: self.log_path(init, i),
        })
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or(self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        // Capped: an absurd grace period must not overflow a deadline.
        Duration::from_secs(u64::try_from(secs).unwrap_or(0).min(3600))
    }

    /// SIGTERM, wait up to `grace`, SIGKILL; the exit is then recorded by
    /// the next tick as a restart.
    async fn kill(&mut self, init: bool, i: usize, grace: Duration) {
        let c = self.ctr(init, i);
        let Some(r) = c.running.as_mut() else { return };
        container::signal(r.pid, libc::SIGTERM);
        if tokio::time::timeout(grace, r.child.wait()).await.is_err() {
            container::signal(r.pid, libc::SIGKILL);
            let _ = r.child.wait().await;
        }
    }

    async fn kill_all(&mut self) {
        for c in self.init.iter_mut().chain(self.main.iter_mut()) {
            if let Some(r) = c.running.as_mut() {
                container::signal(r.pid, libc::SIGKILL);
                let _ = r.child.wait().await;
            }
            c.running = None;
        }
    }

    fn terminal(&self) -> bool {
        let phase = self.last_status["status"]["phase"].as_str();
        matches!(phase, Some("Succeeded" | "Failed"))
    }

    /// preStop hooks, SIGTERM, the grace period, SIGKILL; at once when the
    /// pod is force-deleted or the node stops meanwhile.
    async fn graceful_stop(
        &mut self,
        rx: &mut watch::Receiver<Option<Pod>>,
        stop: &mut watch::Receiver<bool>,
    ) {
        let forced = async {
            loop {
                if *stop.borrow() || rx.borrow().is_none() {
                    return;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    r = stop.changed() => if r.is_err() { return },
                }
            }
        };
        tokio::pin!(forced);
        let deadline = Instant::now() + self.grace();
        tokio::select! {
            _ = self.stop_within(deadline) => {}
            _ = &mut forced => {
                tracing::info!(pod = %self.name, "forced stop");
                self.kill_all().await;
            }
        }
    }

    async fn stop_within(&mut self, deadline: Instant) {
        tracing::info!(pod = %self.name, "stopping pod");
        for c in &self.main {
            if let (Some(r), Some(cmd)) = (
                &c.running,
                c.spec
                    .lifecycle
                    .as_ref()
                    .and_then(|l| l.pre_stop.as_ref())
                    .and_then(|h| h.exec.as_ref())
                    .and_then(|e| e.command.clone()),
            ) {
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(left, probe::exec(r.pid, &cmd)).await;
            }
        }
        for c in self.init.iter().chain(self.main.iter()) {
            if let Some(r) = &c.running {
                container::signal(r.pid, libc::SIGTERM);
            }
        }
        for c in self.init.iter_mut().chain(self.main.iter_mut()) {
            if let Some(r) = c.running.as_mut() {
                let left = deadline.saturating_duration_since(Instant::now());
                if tokio::time::timeout(left, r.child.wait()).await.is_err() {
                    container::signal(r.pid, libc::SIGKILL);
                    let _ = r.child.wait().await;
                }
            }
            c.running = None;
        }
    }

    fn teardown(&mut self) {
        if let Err(e) = net::delete(&self.netns) {
            tracing::debug!(error = %e, "netns already gone");
        }
        if let Some(ip) = self.ip.take() {
            self.ctx.pool.give_back(ip);
        }
        // Secrets were written here; logs stay.
        let _ = std::fs::remove_dir_all(self.dir.join("volumes"));
    }

    async fn finalize_delete(&self) {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = api.delete(&self.name, &dp).await {
            tracing::debug!(error = %e, "final delete");
        }
    }

    fn compute_status(&self) -> Value {
        let image_id = |c: &Ctr| {
            crate::config::binary_for(&self.ctx.args.images, c.spec.image.as_deref().unwrap_or(""))
                .map(|b| format!("llorch-node://{}", b.display()))
                .unwrap_or_default()
        };
        let mut init_status: Vec<Value> =
            self.init.iter().map(|c| c.status(&image_id(c))).collect();
        let mut main_status: Vec<Value> =
            self.main.iter().map(|c| c.status(&image_id(c))).collect();
        let inits_done = self
            .init
            .iter()
            .all(|c| c.finished.as_ref().is_some_and(|t| t.exit_code == 0));
        let init_failed = self
            .init
            .iter()
            .any(|c| c.finished.as_ref().is_some_and(|t| t.exit_code != 0));
        if !self.volume_error.is_empty() {
            for s in init_status.iter_mut().chain(main_status.iter_mut()) {
                s["state"] = json!({ "waiting": { "reason": "ContainerCreating", "message": self.volume_error } });
            }
        } else if !inits_done {
            for s in main_status.iter_mut() {
                s["state"] = json!({ "waiting": { "reason": "PodInitializing" } });
            }
        }
        let all_ready = !self.main.is_empty() && self.main.iter().all(|c| c.ready);
        let all_finished = self.main.iter().all(|c| c.finished.is_some());
        let phase = if init_failed
            || (all_finished
                && self
                    .main
                    .iter()
                    .any(|c| c.finished.as_ref().is_some_and(|t| t.exit_code != 0)))
        {
            "Failed"
        } else if all_finished {
            "Succeeded"
        } else if inits_done
            && self
                .main
                .iter()
                .any(|c| c.running.is_some() || c.restarts > 0)
        {
            "Running"
        } else {
            "Pending"
        };
        let cond = |t: &str, ok: bool| {
            let prev = self
                .pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.type_ == t && c.status == if ok { "True" } else { "False" })
                })
                .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0.to_string()));
            json!({ "type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": prev.unwrap_or_else(now) })
        };
        let ip = self.ip.map(|ip| ip.to_string());
        json!({
            "status": {
                "phase": phase,
                "hostIP": self.ctx.args.host_ip.to_string(),
                "podIP": ip,
                "podIPs": ip.as_ref().map(|ip| json!([{ "ip": ip }])),
                "startTime": self.start_time,
                "conditions": [
                    cond("Initialized", inits_done),
                    cond("Ready", all_ready),
                    cond("ContainersReady", all_ready),
                    cond("PodScheduled", true),
                ],
                "initContainerStatuses": if self.init.is_empty() { Value::Null } else { json!(init_status) },
                "containerStatuses": main_status,
            }
        })
    }

    async fn push_status(&mut self) {
        let status = self.compute_status();
        if status == self.last_status {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => self.last_status = status,
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "cannot write pod status"),
        }
    }
}

struct Failure(&'static str, String);

/// Runs `p` if it is due; `Some(result)` when it ran.
async fn due_probe(
    p: &Probe,
    st: &mut ProbeState,
    since: Instant,
    c: &Container,
    ip: Ipv4Addr,
    pid: u32,
) -> Option<bool> {
    let now = Instant::now();
    let next = *st.next.get_or_insert(
        since + Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
    );
    if now < next {
        return None;
    }
    st.next = Some(now + Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64));
    let ok = probe::run(p, c, ip, pid).await.is_ok();
    if ok {
        st.successes += 1;
        st.failures = 0;
    } else {
        st.failures += 1;
        st.successes = 0;
    }
    Some(ok)
}

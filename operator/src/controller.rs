//! The reconcile loop: read → validate → build → apply → status.
//!
//! One kube-runtime `Controller` watches ModelWorkers and the children they
//! own (Deployments, Services, Secrets), so an edit or a deletion of a
//! child brings its owner back to the loop and the child is restored.
//! Children are written with server-side apply under one field manager and
//! `force`, so the operator owns exactly the fields it sets and an apply
//! with nothing to change leaves the object (and its resourceVersion)
//! alone. The status is written only when the computed value differs from
//! the stored one. An invalid spec gets `Ready=False`/`InvalidSpec`, a
//! Warning event, and no requeue: the next change of the spec wakes it. A
//! model the worker cannot run (its pods' `fetch` says `UNSUPPORTED_MODEL`)
//! is `Failed` the same way: a Warning event and no periodic requeue (its
//! pods' changes still wake the loop).
//! API errors back off exponentially per object.

use crate::build::{self, BuildConfig, BuildError};
use crate::conditions::{self, ConditionType};
use crate::metrics::{Metrics, Outcome};
use crate::pods::PodSummary;
use crate::policy::Policy;
use crate::status::{self, Observed};
use crate::validate;
use children::{apply, ensure_secret, stop_deployment, sync_network_policy, sync_pdb};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, ApiResource, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use llorch_api::{ModelWorker, Phase};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "llorch-operator";
/// The annotation holding a hash of what the operator last applied to a
/// child.
pub const APPLIED_HASH: &str = "llorch.dev/applied-hash";
/// How often a healthy ModelWorker is looked at again without a change.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a ModelWorker with unschedulable pods is looked at again.
const UNSCHEDULABLE_RECHECK: Duration = Duration::from_secs(15);
/// While a name conflict shows, how soon to look again (a rival removed may
/// still be in the cache at the reconcile its removal started).
const NAME_CONFLICT_RECHECK: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A child could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A child's name is taken by an object the operator did not create.
    #[error("{0}")]
    Taken(String),
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct Config {
    /// What shapes the children.
    pub build: BuildConfig,
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    /// What ModelWorkers may ask for.
    pub policy: Policy,
    /// Longest wait between start-up calls the API server did not answer.
    pub api_retry_max: std::time::Duration,
    /// How often ModelWorkers with `spec.autoscaling` are looked at.
    pub autoscale_interval: std::time::Duration,
    /// The span the autoscaler averages load over.
    pub autoscale_window: std::time::Duration,
}

/// State shared by every reconcile.
pub struct Context {
    client: Client,
    cfg: Config,
    pdb: ApiResource,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The PodDisruptionBudget version the API server serves: `v1` where
/// `policy/v1` lists it (Kubernetes 1.21 on), `v1beta1` where that group
/// version is not found; any other failure is retried until the API
/// server answers (a guess would write every PodDisruptionBudget wrong).
async fn pdb_version(client: &Client, retry_max: std::time::Duration) -> &'static str {
    crate::startup::until_answered(
        "discovering the PodDisruptionBudget version",
        retry_max,
        || async {
            match client.list_api_group_resources("policy/v1").await {
                Ok(list)
                    if list
                        .resources
                        .iter()
                        .any(|r| r.kind == "PodDisruptionBudget") =>
                {
                    Ok("v1")
                }
                Ok(_) => Ok("v1beta1"),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok("v1beta1"),
                Err(e) => Err(e),
            }
        },
    )
    .await
}

impl Context {
    /// A context for `client`: discovers the PodDisruptionBudget version
    /// the API server serves (`policy/v1` from Kubernetes 1.21 on),
    /// retrying until it answers.
    pub async fn new(client: Client, cfg: Config, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let version = pdb_version(&client, cfg.api_retry_max).await;
        tracing::info!(version, "PodDisruptionBudgets are policy/{version}");
        let pdb = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "policy",
            version,
            "PodDisruptionBudget",
        ));
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Ok(Context {
            client,
            cfg,
            pdb,
            recorder,
            failures: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }
}

/// Runs the controller until `shutdown` completes, then returns once the
/// reconciles in flight have finished. One kube-runtime controller per
/// watched namespace (so namespaced RBAC suffices), or one for all.
pub async fn run(ctx: Context, shutdown: impl Future<Output = ()> + Send + 'static) {
    let ctx = Arc::new(ctx);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send(true).ok();
    });
    let scopes: Vec<Option<String>> = if ctx.cfg.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.cfg.namespaces.iter().cloned().map(Some).collect()
    };
    let loops = scopes.into_iter().map(|ns| {
        let mut stop = stop_rx.clone();
        run_scope(ctx.clone(), ns, async move {
            stop.wait_for(|s| *s).await.ok();
        })
    });
    let mut stop = stop_rx.clone();
    let scaler = scaling::run(ctx.clone(), async move {
        stop.wait_for(|s| *s).await.ok();
    });
    futures::future::join(futures::future::join_all(loops), scaler).await;
}

/// The API of `K` in namespace `ns`, or in every namespace.
pub(crate) fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_scope(
    ctx: Arc<Context>,
    ns: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = ns.as_deref();
    let managed = watcher::Config::default().labels(build::MANAGED_SELECTOR);
    let controller = Controller::new(
        scoped::<ModelWorker>(&ctx.client, ns),
        watcher::Config::default(),
    );
    let store = controller.store();
    ctx.metrics.watch(store.clone());
    controller
        // A ModelWorker's names bear on the others that claim them too.
        .watches(
            scoped::<ModelWorker>(&ctx.client, ns),
            watcher::Config::default(),
            move |changed: ModelWorker| crate::names::neighbours(&changed, &store.state()),
        )
        .owns(scoped::<Deployment>(&ctx.client, ns), managed.clone())
        .owns(scoped::<Service>(&ctx.client, ns), managed.clone())
        // Pods belong to ReplicaSets, not to the ModelWorker: map them by
        // label, so a crash loop reaches the status.
        .watches(scoped::<Pod>(&ctx.client, ns), managed, owner_of)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                // error_policy has logged reconcile errors; the rest are
                // watch errors, retried by the watcher with backoff.
                Err(e) => tracing::debug!(error = %e, "controller stream"),
            }
        })
        .await;
}

fn key(mw: &ModelWorker) -> String {
    format!("{}/{}", mw.namespace().unwrap_or_default(), mw.name_any())
}

fn error_policy(mw: Arc<ModelWorker>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key(&mw)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = BACKOFF_MIN
        .saturating_mul(1u32 << (n - 1).min(16))
        .min(BACKOFF_MAX);
    tracing::warn!(modelworker = %key(&mw), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// One pass over one ModelWorker, counted and timed.
pub async fn reconcile(mw: Arc<ModelWorker>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = std::time::Instant::now();
    let res = reconcile_inner(mw, ctx.clone()).await;
    let outcome = match &res {
        Ok((_, true)) => Outcome::Ok,
        Ok((_, false)) => Outcome::Invalid,
        Err(_) => Outcome::Error,
    };
    ctx.metrics.reconciled(outcome, start.elapsed());
    res.map(|(action, _)| action)
}

/// The pass itself; the flag is false for an invalid spec.
async fn reconcile_inner(mw: Arc<ModelWorker>, ctx: Arc<Context>) -> Result<(Action, bool), Error> {
    let (name, ns) = build::ids(&mw)?;
    if mw.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok((Action::await_change(), true));
    }
    let now = status::now();
    let problems = validate::validate(&mw, &ctx.cfg.policy);
    if !problems.is_empty() {
        let st = status::compute(&mw, Observed::Invalid(&problems), &now);
        if write_status(&ctx, &mw, &ns, &name, &st).await? {
            event(
                &ctx,
                &mw,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                problems.join("; "),
            )
            .await;
        }
        // A spec beyond the installer's policy (a node path, an image or an
        // account it does not allow) must not keep running from before: the
        // Deployment an earlier operator, or an earlier policy, built for it
        // is scaled to zero, so no pod mounts or runs what is refused.
        if !ctx.cfg.policy.check(&mw).is_empty() {
            stop_deployment(&ctx, &ns, &name).await?;
        }
        forget_failures(&ctx, &mw);
        return Ok((Action::await_change(), false));
    }

    let applied = match apply_children(&ctx, &mw, &ns, &name).await {
        Ok(d) => d,
        Err(e) if let Some(msg) = refusal(&e) => {
            // The server will refuse the same object again: say so in the
            // status (a reconcile log line is not where users look), and
            // still retry with backoff in case the cause is outside the
            // spec (an admission policy, a quota).
            let st = status::compute(&mw, Observed::Refused(&msg), &now);
            if write_status(&ctx, &mw, &ns, &name, &st).await? {
                event(&ctx, &mw, EventType::Warning, "ApplyFailed", "Apply", msg).await;
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };

    let pods = pod_summaries(&ctx, &ns, &name).await?;
    let mut st = status::compute(&mw, Observed::Applied(Some(&applied), &pods), &now);
    let clash = crate::names::conflict(&mw, &ctx.metrics.workers());
    // A rival's removal may reach this reconcile before the cache drops it:
    // look again soon while a conflict shows.
    let conflicted = clash.is_some();
    if let Some(clash) = clash {
        let prev = mw.status.as_ref().map(|s| s.conditions.as_slice());
        let settled = conditions::settle(
            clash,
            prev.unwrap_or_default(),
            mw.metadata.generation,
            &now,
        );
        st.conditions.push(settled);
    }
    let before = mw.status.as_ref().and_then(|s| s.phase);
    let failed = (st.phase == Some(Phase::Failed))
        .then(|| {
            st.conditions
                .iter()
                .find(|c| c.type_ == ConditionType::Degraded.as_str())
        })
        .flatten();
    if write_status(&ctx, &mw, &ns, &name, &st).await? && before != st.phase {
        if let Some(c) = failed {
            event(
                &ctx,
                &mw,
                EventType::Warning,
                &c.reason,
                "Reconcile",
                c.message.clone(),
            )
            .await;
        } else {
            let phase = st.phase.map(|p| format!("{p:?}")).unwrap_or_default();
            event(
                &ctx,
                &mw,
                EventType::Normal,
                &phase,
                "Reconcile",
                format!(
                    "{} of {} replicas ready",
                    st.ready_replicas, mw.spec.replicas
                ),
            )
            .await;
        }
    }
    forget_failures(&ctx, &mw);
    // Nothing the operator can do helps a Failed ModelWorker: it waits for
    // a change of the spec (or of its pods).
    if failed.is_some() {
        return Ok((Action::await_change(), true));
    }
    // Pods waiting for a node turn the ModelWorker Degraded after a
    // timeout, which no watch event announces: look again before it.
    if pods.iter().any(|p| p.unschedulable.is_some()) {
        return Ok((Action::requeue(UNSCHEDULABLE_RECHECK), true));
    }
    if conflicted {
        return Ok((Action::requeue(NAME_CONFLICT_RECHECK), true));
    }
    Ok((Action::requeue(RESYNC), true))
}

/// Applies every child; returns the Deployment as the server has it.
async fn apply_children(
    ctx: &Context,
    mw: &ModelWorker,
    ns: &str,
    name: &str,
) -> Result<Deployment, Error> {
    ensure_secret(ctx, mw, ns, name).await?;
    // A created cache claim is never deleted by a spec change (it holds
    // data); it goes with the ModelWorker through its owner reference.
    if let Some(pvc) = crate::storage::cache_claim(mw)? {
        let claim = crate::storage::cache_claim_name(name);
        apply::<PersistentVolumeClaim, _>(ctx, &ctx.api(ns), &claim, &pvc).await?;
    }
    let deploy = build::deployment(mw, &ctx.cfg.build)?;
    let applied: Deployment = apply(ctx, &ctx.api(ns), name, &deploy).await?;
    let svc = build::service(mw)?;
    apply::<Service, _>(ctx, &ctx.api(ns), name, &svc).await?;
    sync_pdb(ctx, mw, ns, name).await?;
    sync_network_policy(ctx, mw, ns, name).await?;
    Ok(applied)
}

/// What the API server said when it refused a write for what it holds
/// (invalid, forbidden, immutable): a client error other than a conflict or
/// throttling, which retrying the same object does not cure. Its own
/// message, clipped to fit a condition and an event note (1 kB).
fn refusal(e: &Error) -> Option<String> {
    match e {
        Error::Taken(msg) => Some(crate::status::clip(msg, 900)),
        Error::Kube {
            source: kube::Error::Api(r),
            action,
        } if action.starts_with("apply")
            && (400..500).contains(&r.code)
            && ![404, 409, 429].contains(&r.code) =>
        {
            Some(crate::status::clip(
                &format!("{action}: {}", r.message),
                900,
            ))
        }
        _ => None,
    }
}

fn forget_failures(ctx: &Context, mw: &ModelWorker) {
    ctx.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key(mw));
}

/// The ModelWorker's pods, summarized.
async fn pod_summaries(ctx: &Context, ns: &str, name: &str) -> Result<Vec<PodSummary>, Error> {
    let api: Api<Pod> = ctx.api(ns);
    let lp = ListParams::default().labels(&build::selector_string(name));
    let pods = api
        .list(&lp)
        .await
        .map_err(kube_err(format!("list pods of {name}")))?;
    Ok(pods.items.iter().map(crate::pods::summarize).collect())
}

/// The ModelWorker a pod belongs to, by the label the operator sets.
fn owner_of(pod: Pod) -> Option<ObjectRef<ModelWorker>> {
    let ns = pod.metadata.namespace.as_deref()?;
    let name = pod.labels().get("llorch.dev/model-worker")?;
    Some(ObjectRef::new(name).within(ns))
}

/// Writes the status when it differs from the stored one; returns whether
/// it wrote. The write names the resourceVersion the status was computed
/// from, so it fails (and the object is reconciled again) rather than
/// overwrite a worker report that landed in between.
async fn write_status(
    ctx: &Context,
    mw: &ModelWorker,
    ns: &str,
    name: &str,
    st: &llorch_api::ModelWorkerStatus,
) -> Result<bool, Error> {
    if mw.status.as_ref() == Some(st) {
        return Ok(false);
    }
    let api: Api<ModelWorker> = ctx.api(ns);
    let patch = status_patch(mw.metadata.resource_version.as_deref(), st);
    ctx.metrics.wrote();
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err(format!("write status of {name}")))?;
    Ok(true)
}

/// The merge patch that makes the status `st`, naming the resourceVersion
/// it was computed from. A list the status no longer has is written as
/// null: a merge patch that leaves a key out keeps its old value.
pub fn status_patch(
    resource_version: Option<&str>,
    st: &llorch_api::ModelWorkerStatus,
) -> serde_json::Value {
    let mut status = serde_json::to_value(st).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(o) = status.as_object_mut() {
        for key in ["workers", "conditions"] {
            o.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({
        "metadata": { "resourceVersion": resource_version },
        "status": status,
    })
}

/// Publishes an event; a failure to record one is logged, not fatal.
async fn event(
    ctx: &Context,
    mw: &ModelWorker,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    ctx.metrics.wrote();
    if let Err(e) = ctx.recorder.publish(&ev, &mw.object_ref(&())).await {
        tracing::warn!(modelworker = %key(mw), error = %e, "cannot record an event");
    }
}

mod children;
mod scaling;
#[cfg(test)]
mod tests;

//! The autoscaler loop of the leading replica: every interval, each
//! ModelWorker with `spec.autoscaling` is looked at (its ready replicas
//! from its Service's Endpoints, their load from their `/metrics`) and
//! resized through the scale subresource when [`Scaler`] says so; each
//! change is an Event and counted in `/metrics`.

use super::{Context, event, key};
use crate::autoscale::{Observation, Scaler};
use crate::gateway::catalog::ready_addresses;
use crate::gateway::kube::parse_figures;
use crate::gateway::upstream::Upstream;
use k8s_openapi::api::core::v1::Endpoints;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use llorch_api::ModelWorker;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs until `stop` resolves.
pub(super) async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()>) {
    let every = ctx.cfg.autoscale_interval;
    let upstream = Upstream::new(Duration::from_secs(1));
    let mut scalers: HashMap<String, Scaler> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let workers: Vec<Arc<ModelWorker>> = ctx
            .metrics
            .workers()
            .into_iter()
            .filter(|mw| mw.spec.autoscaling.is_some() && mw.metadata.deletion_timestamp.is_none())
            .collect();
        scalers.retain(|k, _| workers.iter().any(|mw| key(mw) == *k));
        for mw in workers {
            let scaler = scalers.entry(key(&mw)).or_default();
            look_at(&ctx, &upstream, &mw, scaler, every).await;
        }
    }
}

/// One look at one ModelWorker.
async fn look_at(
    ctx: &Context,
    upstream: &Upstream,
    mw: &ModelWorker,
    scaler: &mut Scaler,
    every: Duration,
) {
    let (Some(spec), Some(ns), Some(name)) = (
        mw.spec.autoscaling.as_ref(),
        mw.metadata.namespace.as_deref(),
        mw.metadata.name.as_deref(),
    ) else {
        return;
    };
    let addrs = match ctx.api::<Endpoints>(ns).get_opt(name).await {
        Ok(ep) => ep.map(|ep| ready_addresses(&ep)).unwrap_or_default(),
        Err(e) => {
            tracing::debug!(modelworker = %key(mw), error = %e, "cannot read the endpoints");
            return;
        }
    };
    // Each replica's requests (decoding and queued), read at once; one
    // failed read leaves the sample out.
    let reads = addrs.iter().map(|addr| async move {
        upstream
            .metrics(*addr, every)
            .await
            .and_then(|text| parse_figures(&text))
            .map(|f| f.in_flight as f64)
    });
    let load = futures::future::join_all(reads)
        .await
        .into_iter()
        .try_fold(0.0, |sum, l| l.map(|l| sum + l));
    let obs = Observation {
        current: mw.spec.replicas,
        ready: addrs.len(),
        load,
    };
    let window = ctx.cfg.autoscale_window;
    let Some(d) = scaler.observe(spec, mw.spec.server.parallel, obs, Instant::now(), window) else {
        return;
    };
    let api: Api<ModelWorker> = ctx.api(ns);
    let resized = async {
        let mut scale = api.get_scale(name).await?;
        let s = scale.spec.get_or_insert_with(Default::default);
        if s.replicas != Some(obs.current) {
            return Ok(false);
        }
        s.replicas = Some(d.desired);
        api.replace_scale(name, &PostParams::default(), &scale)
            .await?;
        Ok::<_, kube::Error>(true)
    };
    match resized.await {
        Ok(true) => {
            let up = d.desired > obs.current;
            ctx.metrics.scaled(up);
            let note = format!(
                "{} → {} replicas: {:.1} requests on average over {} s, {} per replica aimed at",
                obs.current,
                d.desired,
                d.average,
                window.as_secs(),
                d.target
            );
            tracing::info!(modelworker = %key(mw), %note, "autoscaled");
            let reason = if up { "ScaledUp" } else { "ScaledDown" };
            event(ctx, mw, EventType::Normal, reason, "Scale", note).await;
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(modelworker = %key(mw), error = %e, "cannot resize"),
    }
}

//! Names the gateway routes by, claimed by more than one ModelWorker.
//!
//! A ModelWorker claims its bare name and each of `spec.servedModelNames`.
//! A name two claim routes to neither (the gateway answers
//! `MODEL_NAME_CONFLICT`); each claimant's status then carries the
//! condition `NameConflict=True` saying which names and who else claims
//! them, until the conflict is gone. A change to one ModelWorker
//! re-reconciles the others it shares a name with, and those whose status
//! still shows a conflict, so both sides see it come and go.

use crate::conditions::{Cond, ConditionStatus, ConditionType, Reason};
use kube::runtime::reflector::ObjectRef;
use llorch_api::ModelWorker;
use std::sync::Arc;

/// `NAMESPACE/NAME`.
fn id(mw: &ModelWorker) -> String {
    format!(
        "{}/{}",
        mw.metadata.namespace.as_deref().unwrap_or_default(),
        mw.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The names `mw` claims.
fn claims(mw: &ModelWorker) -> impl Iterator<Item = &String> {
    mw.metadata
        .name
        .iter()
        .chain(mw.spec.served_model_names.iter())
}

/// `NameConflict=True` when another ModelWorker of `all` claims one of
/// `mw`'s names and at least one side claims it as a served name; `None`
/// otherwise. Two namespaces reusing a bare name is common and no mistake
/// (such a name is routed to neither; NAMESPACE/NAME is), so it is not
/// flagged; an alias is an explicit claim, so a clash with it is.
pub fn conflict(mw: &ModelWorker, all: &[Arc<ModelWorker>]) -> Option<Cond> {
    let me = id(mw);
    let others: Vec<&Arc<ModelWorker>> = all.iter().filter(|o| id(o) != me).collect();
    let mut clashes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for name in claims(mw) {
        if !seen.insert(name) {
            continue;
        }
        let mine_is_alias = mw.spec.served_model_names.contains(name);
        let rivals: Vec<&Arc<ModelWorker>> = others
            .iter()
            .copied()
            .filter(|o| claims(o).any(|n| n == name))
            .collect();
        let any_alias = mine_is_alias
            || rivals
                .iter()
                .any(|o| o.spec.served_model_names.contains(name));
        if !rivals.is_empty() && any_alias {
            let mut ids: Vec<String> = rivals.iter().map(|o| id(o)).collect();
            ids.sort();
            clashes.push(format!("{name:?} is also claimed by {}", ids.join(", ")));
        }
    }
    if clashes.is_empty() {
        return None;
    }
    Some(Cond::new(
        ConditionType::NameConflict,
        ConditionStatus::True,
        Reason::NameClaimedTwice,
        format!(
            "{}: the gateway routes such a name to neither; NAMESPACE/NAME still works",
            clashes.join("; ")
        ),
    ))
}

/// The ModelWorkers of `all` to reconcile after `changed` changed: those
/// sharing a name with it, and those whose status shows a conflict.
pub fn neighbours(changed: &ModelWorker, all: &[Arc<ModelWorker>]) -> Vec<ObjectRef<ModelWorker>> {
    let me = id(changed);
    let names: Vec<&String> = claims(changed).collect();
    all.iter()
        .filter(|o| id(o) != me)
        .filter(|o| {
            claims(o).any(|n| names.contains(&n))
                || o.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == ConditionType::NameConflict.as_str() && c.status == "True"
                    })
                })
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mw(ns: &str, name: &str, aliases: &[&str]) -> Arc<ModelWorker> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "llorch.dev/v1alpha1", "kind": "ModelWorker",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"model": {"uri": "hf://o/r/m.gguf"}, "servedModelNames": aliases},
            }))
            .expect("a valid ModelWorker"),
        )
    }

    #[test]
    fn both_claimants_see_the_conflict_and_others_do_not() {
        let a = mw("a", "gemma", &["chat"]);
        let b = mw("b", "llama", &["chat"]);
        let c = mw("c", "gemma", &[]);
        let d = mw("d", "mistral", &[]);
        let all = vec![a.clone(), b.clone(), c.clone(), d.clone()];
        let ca = conflict(&a, &all).expect("a conflicts");
        assert_eq!(ca.type_, ConditionType::NameConflict);
        assert!(
            ca.message.contains("\"chat\" is also claimed by b/llama"),
            "{}",
            ca.message
        );
        assert!(
            !ca.message.contains("c/gemma"),
            "two namespaces reusing a bare name is no conflict: {}",
            ca.message
        );
        assert!(conflict(&b, &all).is_some());
        assert!(conflict(&c, &all).is_none());
        assert!(conflict(&d, &all).is_none());
        // An alias equal to another's bare name clashes, on both sides;
        // judged also for one not yet in the cache.
        let e = mw("e", "phi", &["mistral"]);
        assert!(conflict(&e, &all).is_some());
        let mut with_e = all.clone();
        with_e.push(e);
        assert!(conflict(&d, &with_e).is_some());
        let n: Vec<String> = neighbours(&b, &all)
            .iter()
            .map(|r| r.name.clone())
            .collect();
        assert_eq!(n, vec!["gemma"], "a shares chat with b");
    }
}

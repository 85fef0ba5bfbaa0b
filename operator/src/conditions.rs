//! The conditions of a ModelWorker's status as types: which condition,
//! its status, and why, with [`settle`] the one place a condition gets its
//! `lastTransitionTime` (kept while its status is unchanged), for the
//! reconciler and the report route alike.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The conditions a ModelWorker has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// Some replica serves.
    Ready,
    /// The Deployment is rolling out (or cannot, and says why).
    Progressing,
    /// Fewer replicas serve than asked for, or none can.
    Degraded,
    /// The model is fetched and loaded (from workers' reports and failed
    /// fetches).
    ModelAvailable,
    /// Another ModelWorker claims one of its names (present only then).
    NameConflict,
}

impl ConditionType {
    /// The name in `status.conditions[].type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
            ConditionType::ModelAvailable => "ModelAvailable",
            ConditionType::NameConflict => "NameConflict",
        }
    }
}

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Nobody knows yet.
    Unknown,
}

impl ConditionStatus {
    /// The name in `status.conditions[].status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }

    /// The status a written condition has (anything unexpected: Unknown).
    pub fn parse(s: &str) -> Self {
        match s {
            "True" => ConditionStatus::True,
            "False" => ConditionStatus::False,
            _ => ConditionStatus::Unknown,
        }
    }
}

/// Why a condition has its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The spec failed validation.
    InvalidSpec,
    /// The API server refused a child.
    ApplyFailed,
    /// `spec.replicas` is 0.
    ScaledToZero,
    /// No replica is ready yet.
    NoReadyReplicas,
    /// Replicas are starting.
    Starting,
    /// Some but not all replicas are ready.
    SomeReplicasReady,
    /// Some replicas are not ready.
    ReplicasUnavailable,
    /// Every replica is ready.
    AllReplicasReady,
    /// The scheduler cannot place a pod.
    Unschedulable,
    /// The Deployment matches the spec.
    RolloutComplete,
    /// The Deployment is updating replicas.
    RollingOut,
    /// A worker loaded the model.
    ModelLoaded,
    /// No worker has reported yet.
    NoReport,
    /// A worker failed to load the model without an error code.
    LoadFailed,
    /// The worker cannot run the model (architecture or weight type).
    UnsupportedModel,
    /// The model does not fit the GPU's memory.
    InsufficientGpuMemory,
    /// The model could not be fetched.
    FetchFailed,
    /// Another ModelWorker claims one of its names.
    NameClaimedTwice,
    /// A reason taken from elsewhere: a pod's or the Deployment's, or a
    /// worker's error code.
    Other(String),
}

impl Reason {
    /// The name in `status.conditions[].reason`.
    pub fn as_str(&self) -> &str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::ScaledToZero => "ScaledToZero",
            Reason::NoReadyReplicas => "NoReadyReplicas",
            Reason::Starting => "Starting",
            Reason::SomeReplicasReady => "SomeReplicasReady",
            Reason::ReplicasUnavailable => "ReplicasUnavailable",
            Reason::AllReplicasReady => "AllReplicasReady",
            Reason::Unschedulable => "Unschedulable",
            Reason::RolloutComplete => "RolloutComplete",
            Reason::RollingOut => "RollingOut",
            Reason::ModelLoaded => "ModelLoaded",
            Reason::NoReport => "NoReport",
            Reason::LoadFailed => "LoadFailed",
            Reason::UnsupportedModel => "UnsupportedModel",
            Reason::InsufficientGpuMemory => "InsufficientGPUMemory",
            Reason::FetchFailed => "FetchFailed",
            Reason::NameClaimedTwice => "NameClaimedTwice",
            Reason::Other(s) => s,
        }
    }

    /// The reason a written condition has.
    pub fn parse(s: &str) -> Self {
        const KNOWN: [Reason; 18] = [
            Reason::InvalidSpec,
            Reason::ApplyFailed,
            Reason::ScaledToZero,
            Reason::NoReadyReplicas,
            Reason::Starting,
            Reason::SomeReplicasReady,
            Reason::ReplicasUnavailable,
            Reason::AllReplicasReady,
            Reason::Unschedulable,
            Reason::RolloutComplete,
            Reason::RollingOut,
            Reason::ModelLoaded,
            Reason::NoReport,
            Reason::LoadFailed,
            Reason::UnsupportedModel,
            Reason::InsufficientGpuMemory,
            Reason::FetchFailed,
            Reason::NameClaimedTwice,
        ];
        KNOWN
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or_else(|| Reason::Other(s.to_string()))
    }

    /// Whether `ModelAvailable=False` with this reason comes from a failed
    /// `fetch` rather than from a worker's report. `UnsupportedModel` comes
    /// from either (a worker's load runs fetch's check), so it is kept as
    /// a report is: until no listed worker has an error.
    pub fn is_fetch_failure(&self) -> bool {
        matches!(self, Reason::InsufficientGpuMemory | Reason::FetchFailed)
    }
}

/// One condition as computed, before its transition time is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// Which condition.
    pub type_: ConditionType,
    /// Its status.
    pub status: ConditionStatus,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

impl Cond {
    /// A condition.
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Cond {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }

    /// A written condition as computed (for carrying one over).
    pub fn of(c: &Condition) -> Option<Self> {
        let type_ = [
            ConditionType::Ready,
            ConditionType::Progressing,
            ConditionType::Degraded,
            ConditionType::ModelAvailable,
            ConditionType::NameConflict,
        ]
        .into_iter()
        .find(|t| t.as_str() == c.type_)?;
        Some(Cond::new(
            type_,
            ConditionStatus::parse(&c.status),
            Reason::parse(&c.reason),
            c.message.clone(),
        ))
    }
}

/// The written condition `type_` of `conditions`, as computed.
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<Cond> {
    conditions
        .iter()
        .find(|c| c.type_ == type_.as_str())
        .and_then(Cond::of)
}

/// `c` as written: its `lastTransitionTime` is that of the same condition
/// in `prev` when the status is unchanged, else `now`.
pub fn settle(c: Cond, prev: &[Condition], generation: Option<i64>, now: &Time) -> Condition {
    let since = prev
        .iter()
        .find(|p| p.type_ == c.type_.as_str() && p.status == c.status.as_str())
        .map(|p| p.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: c.type_.as_str().into(),
        status: c.status.as_str().into(),
        reason: c.reason.as_str().into(),
        message: c.message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Sets condition `c` in `conditions` (replacing the one of its type),
/// settling its transition time against what was there.
pub fn set(conditions: &mut Vec<Condition>, c: Cond, generation: Option<i64>, now: &Time) {
    let written = settle(c, conditions, generation, now);
    conditions.retain(|p| p.type_ != written.type_);
    conditions.push(written);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("a time"))
    }

    #[test]
    fn a_transition_time_moves_only_when_the_status_changes() {
        let mut conds = Vec::new();
        let loaded = |s| Cond::new(ConditionType::ModelAvailable, s, Reason::ModelLoaded, "m");
        set(&mut conds, loaded(ConditionStatus::True), Some(1), &at(10));
        set(&mut conds, loaded(ConditionStatus::True), Some(2), &at(20));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, at(10));
        assert_eq!(conds[0].observed_generation, Some(2));
        set(&mut conds, loaded(ConditionStatus::False), Some(2), &at(30));
        assert_eq!(conds[0].last_transition_time, at(30));
        assert_eq!(conds[0].status, "False");
    }

    #[test]
    fn reasons_read_back_as_written() {
        for name in [
            "InsufficientGPUMemory",
            "UnsupportedModel",
            "ImagePullBackOff",
        ] {
            assert_eq!(Reason::parse(name).as_str(), name);
        }
        assert!(Reason::parse("FetchFailed").is_fetch_failure());
        assert!(!Reason::parse("UnsupportedModel").is_fetch_failure());
        assert_eq!(
            Reason::parse("VramOom"),
            Reason::Other("VramOom".to_string())
        );
        assert_eq!(ConditionStatus::parse("maybe"), ConditionStatus::Unknown);
    }
}

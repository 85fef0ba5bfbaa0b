use super::status_patch;
use llorch_api::{ModelWorkerStatus, WorkerStatus};

#[test]
fn a_status_patch_clears_lists_that_became_empty() {
    let empty = ModelWorkerStatus::default();
    let p = status_patch(Some("42"), &empty);
    assert_eq!(p["metadata"]["resourceVersion"], "42");
    assert!(p["status"]["workers"].is_null());
    assert!(
        p["status"]
            .as_object()
            .is_some_and(|o| o.contains_key("workers"))
    );
    let one = ModelWorkerStatus {
        workers: vec![WorkerStatus::default()],
        ..Default::default()
    };
    assert_eq!(
        status_patch(None, &one)["status"]["workers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

//! Reading a Pod's status: ready, or failed and why (typed), so a create never waits
//! out its timeout on a Pod that cannot start.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::pod::INSTALL_CONTAINER;

/// Why a sandbox Pod cannot run (or stopped running).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodFailure {
    /// The kubelet cannot pull an image (`ErrImagePull`, `ImagePullBackOff`,
    /// `InvalidImageName`…).
    #[error("the cluster cannot pull image {image:?} ({reason}): {message}")]
    ImagePull {
        /// The container.
        container: String,
        /// Its image.
        image: String,
        /// The kubelet's reason.
        reason: String,
        /// The kubelet's message.
        message: String,
    },
    /// No node can take the Pod (too large, taints, selectors).
    #[error("no node can run it (Unschedulable): {message}")]
    Unschedulable {
        /// The scheduler's message.
        message: String,
    },
    /// A container was killed for lack of memory.
    #[error("container {container} was killed for lack of memory (OOMKilled)")]
    OutOfMemory {
        /// The container.
        container: String,
    },
    /// The kubelet evicted the Pod (node pressure, its ephemeral-storage limit).
    #[error("the Pod was evicted: {message}")]
    Evicted {
        /// The kubelet's message.
        message: String,
    },
    /// The init container that installs the agent failed.
    #[error(
        "installing the agent failed (init container exited with {exit_code}, {reason}): {message}"
    )]
    InstallFailed {
        /// Its exit status.
        exit_code: i32,
        /// The kubelet's reason.
        reason: String,
        /// The kubelet's message.
        message: String,
    },
    /// The container cannot be created (bad configuration) or its process ended.
    #[error("container {container} {what} ({reason}): {message}")]
    Container {
        /// The container.
        container: String,
        /// What happened, for people.
        what: String,
        /// The kubelet's reason.
        reason: String,
        /// The kubelet's message.
        message: String,
    },
    /// The Pod ended (`Failed`/`Succeeded`) with nothing more precise known.
    #[error("the Pod stopped (phase {phase}): {message}")]
    Stopped {
        /// Its phase.
        phase: String,
        /// Its message.
        message: String,
    },
    /// The Pod was deleted by someone else.
    #[error("the Pod was deleted from outside Kiln")]
    Deleted,
}

const PULL_REASONS: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
];
const CONFIG_REASONS: [&str; 4] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// Whether the Pod is ready: the `Ready` condition is true and it has an address.
pub fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The Pod's address, once it has one.
pub fn pod_ip(pod: &Pod) -> Option<std::net::IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// `Some` when the Pod cannot start or has stopped, with why.
pub fn failure(pod: &Pod) -> Option<PodFailure> {
    let status = pod.status.as_ref()?;
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    if status.reason.as_deref() == Some("Evicted") {
        return Some(PodFailure::Evicted {
            message: text(&status.message),
        });
    }
    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
        {
            return Some(PodFailure::Unschedulable {
                message: text(&condition.message),
            });
        }
    }
    let init = status.init_container_statuses.iter().flatten();
    let main = status.container_statuses.iter().flatten();
    if let Some(failure) = init.chain(main).find_map(container_failure) {
        return Some(failure);
    }
    match status.phase.as_deref() {
        Some(phase @ ("Failed" | "Succeeded")) => Some(PodFailure::Stopped {
            phase: phase.to_string(),
            message: text(&status.message),
        }),
        _ => None,
    }
}

fn container_failure(c: &ContainerStatus) -> Option<PodFailure> {
    let state = c.state.as_ref()?;
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        if PULL_REASONS.contains(&reason.as_str()) {
            return Some(PodFailure::ImagePull {
                container: c.name.clone(),
                image: c.image.clone(),
                reason,
                message,
            });
        }
        if CONFIG_REASONS.contains(&reason.as_str()) {
            return Some(PodFailure::Container {
                container: c.name.clone(),
                what: "cannot start".into(),
                reason,
                message,
            });
        }
        return None;
    }
    let done = state.terminated.as_ref()?;
    let reason = done.reason.clone().unwrap_or_default();
    let message = done.message.clone().unwrap_or_default();
    if reason == "OOMKilled" {
        return Some(PodFailure::OutOfMemory {
            container: c.name.clone(),
        });
    }
    if c.name == INSTALL_CONTAINER {
        // The init container ending well is how it should end.
        return (done.exit_code != 0).then_some(PodFailure::InstallFailed {
            exit_code: done.exit_code,
            reason,
            message,
        });
    }
    Some(PodFailure::Container {
        container: c.name.clone(),
        what: format!("exited with status {}", done.exit_code),
        reason,
        message,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": status,
        }))
        .unwrap()
    }

    fn waiting(name: &str, reason: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name, "image": "img:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": "m"}},
        })
    }

    fn terminated(name: &str, code: i32, reason: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name, "image": "img:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason}},
        })
    }

    #[test]
    fn pending_and_ready_pods_are_not_failures() {
        let pending = pod(serde_json::json!({"phase": "Pending",
            "initContainerStatuses": [waiting(INSTALL_CONTAINER, "PodInitializing")],
            "containerStatuses": [waiting("sandbox", "ContainerCreating")]}));
        assert_eq!(failure(&pending), None);
        assert!(!is_ready(&pending));
        let ready = pod(serde_json::json!({"phase": "Running", "podIP": "10.0.0.7",
            "conditions": [{"type": "Ready", "status": "True"}],
            "initContainerStatuses": [terminated(INSTALL_CONTAINER, 0, "Completed")]}));
        assert_eq!(failure(&ready), None);
        assert!(is_ready(&ready));
        assert_eq!(pod_ip(&ready), Some("10.0.0.7".parse().unwrap()));
    }

    #[test]
    fn each_failure_is_named() {
        let cases = [
            (
                serde_json::json!({"phase": "Pending",
                "containerStatuses": [waiting("sandbox", "ImagePullBackOff")]}),
                "ImagePull",
            ),
            (
                serde_json::json!({"phase": "Pending",
                "initContainerStatuses": [waiting(INSTALL_CONTAINER, "ErrImagePull")]}),
                "ImagePull",
            ),
            (
                serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable", "message": "Insufficient memory"}]}),
                "Unschedulable",
            ),
            (
                serde_json::json!({"phase": "Failed",
                "containerStatuses": [terminated("sandbox", 137, "OOMKilled")]}),
                "OutOfMemory",
            ),
            (
                serde_json::json!({"phase": "Failed", "reason": "Evicted", "message": "disk"}),
                "Evicted",
            ),
            (
                serde_json::json!({"phase": "Pending",
                "initContainerStatuses": [terminated(INSTALL_CONTAINER, 1, "Error")]}),
                "InstallFailed",
            ),
            (
                serde_json::json!({"phase": "Pending",
                "containerStatuses": [waiting("sandbox", "CreateContainerConfigError")]}),
                "Container",
            ),
            (
                serde_json::json!({"phase": "Failed",
                "containerStatuses": [terminated("sandbox", 2, "Error")]}),
                "Container",
            ),
            (serde_json::json!({"phase": "Failed"}), "Stopped"),
        ];
        for (status, kind) in cases {
            let found = failure(&pod(status.clone())).unwrap_or_else(|| panic!("{status}"));
            assert!(
                format!("{found:?}").starts_with(kind),
                "{status} → {found:?}"
            );
        }
        let pull = failure(&pod(serde_json::json!({
            "containerStatuses": [waiting("sandbox", "ImagePullBackOff")]})))
        .unwrap();
        assert!(pull.to_string().contains("img:1"), "{pull}");
    }
}

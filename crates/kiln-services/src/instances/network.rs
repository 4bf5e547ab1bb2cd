//! `GET /v1/instances/{id}/network`: what an instance may reach outside and what its
//! egress did (`crate::network`).
use kiln_store::SessionRecord;

use super::InstanceService;
use crate::error::ServiceResult;
use crate::network::EgressRecord;

/// An instance's network, as its owner sees it.
pub struct InstanceNetwork {
    pub instance: SessionRecord,
    /// The allowlist as given; `None`: no network at all.
    pub allow: Option<Vec<String>>,
    /// The proxy commands inside use, with an allowlist.
    pub proxy: Option<String>,
    /// What its egress did on this server.
    pub egress: EgressRecord,
}

impl InstanceService {
    pub async fn network(
        &self,
        user_id: &str,
        instance_id: &str,
    ) -> ServiceResult<InstanceNetwork> {
        let instance = self.owned_instance(user_id, instance_id).await?;
        let allow = self
            .sessions
            .session_network(&instance)
            .await?
            .map(|policy| policy.entries);
        let egress = self.sessions.egress_record(instance_id);
        let proxy = allow
            .as_ref()
            .map(|_| format!("http://{}", kiln_runtime::EGRESS_PROXY_ADDR));
        Ok(InstanceNetwork {
            instance,
            allow,
            proxy,
            egress,
        })
    }
}

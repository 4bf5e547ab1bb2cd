//! A session's way out (`crate::network`): the egress its sandbox gets when its sample
//! (or its dataset) lists hosts, with the proxy variables every command sees; nothing
//! otherwise. Used wherever a session's sandbox starts (create, fork, restore).
use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_runtime::{Egress, SandboxId, SandboxSpec, EGRESS_PROXY_ADDR};
use kiln_store::SessionRecord;

use super::SessionService;
use crate::error::{ServiceError, ServiceResult};
use crate::network::proxy::EgressProxy;
use crate::network::{policy_for, EgressBook, EgressRecord, NetworkPolicy};
use crate::outbound::OutboundPolicy;

/// The configuration key named when an internal destination is refused.
const ALLOW_KEY: &str = "network.allowed_internal_hosts";

/// `[network]` as the sessions use it.
pub(crate) struct NetworkSettings {
    datasets: BTreeMap<String, Vec<String>>,
    outbound: OutboundPolicy,
}

impl NetworkSettings {
    pub(crate) fn new(config: &kiln_config::NetworkConfig) -> Self {
        NetworkSettings {
            datasets: config.datasets.clone(),
            outbound: OutboundPolicy::new(&config.allowed_internal_hosts, ALLOW_KEY),
        }
    }
}

/// The proxy variables of a sandbox with an egress.
fn proxy_env() -> BTreeMap<String, String> {
    let proxy = format!("http://{EGRESS_PROXY_ADDR}");
    let mut env = BTreeMap::new();
    for name in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
        env.insert(name.to_string(), proxy.clone());
    }
    for name in ["no_proxy", "NO_PROXY"] {
        env.insert(name.to_string(), "localhost,127.0.0.1,::1".to_string());
    }
    env
}

impl SessionService {
    /// Uses `[network]` (once; later calls are ignored).
    pub fn set_network(&self, config: &kiln_config::NetworkConfig) {
        let _ = self.network.set(NetworkSettings::new(config));
    }

    /// What sessions' egresses did on this server.
    pub fn egress_book(&self) -> &Arc<EgressBook> {
        &self.egress_book
    }

    /// The policy of a sample: `Conflict` when its list cannot be read (a session of it
    /// must not start with a network it did not ask for, nor without one it did).
    pub(crate) fn sample_network(
        &self,
        dataset: &str,
        record: &kiln_store::SampleRecord,
    ) -> ServiceResult<Option<NetworkPolicy>> {
        let empty = BTreeMap::new();
        let datasets = self.network.get().map_or(&empty, |n| &n.datasets);
        policy_for(datasets, dataset, record).map_err(|why| {
            ServiceError::Conflict(format!(
                "the network policy of sample {dataset}/{} cannot be used: {why}",
                record.instance_id
            ))
        })
    }

    /// The policy of a session (its sample's), read again from the store.
    pub async fn session_network(
        &self,
        session: &SessionRecord,
    ) -> ServiceResult<Option<NetworkPolicy>> {
        let Some((dataset, sample_id, version)) = session.source.sample() else {
            return Ok(None);
        };
        let Some(sample) = self
            .store
            .get_sample(dataset, sample_id, Some(version))
            .await?
        else {
            return Ok(None);
        };
        self.sample_network(dataset, &sample.record)
    }

    /// Gives `spec` the session's egress and proxy variables, when its policy (read with
    /// its sample, by the caller) lists hosts.
    pub(crate) fn attach_egress(
        &self,
        session_id: &str,
        policy: Option<Arc<NetworkPolicy>>,
        spec: &mut SandboxSpec,
    ) {
        let Some(policy) = policy else {
            return;
        };
        spec.egress = Some(self.egress(session_id, policy));
        spec.env.extend(proxy_env());
    }

    /// The proxy that serves a session's sandbox under `policy`.
    fn egress(&self, session_id: &str, policy: Arc<NetworkPolicy>) -> Egress {
        let outbound = self
            .network
            .get()
            .map(|n| n.outbound.clone())
            .unwrap_or_else(|| OutboundPolicy::new(&[], ALLOW_KEY));
        Egress(Arc::new(EgressProxy::new(
            session_id.to_string(),
            policy,
            outbound,
            Arc::clone(&self.egress_book),
        )))
    }

    /// After a restart: serves the egress of a session's adopted sandbox again (its agent
    /// still relays the proxy address; the server's end went with the old process). A
    /// session whose policy cannot be read any more keeps no way out.
    pub(crate) async fn reattach_egress(&self, session: &SessionRecord, sandbox: &SandboxId) {
        let policy = match self.session_network(session).await {
            Ok(Some(policy)) => Arc::new(policy),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(session = %session.session_id, error = %e,
                    "an adopted sandbox keeps no egress");
                return;
            }
        };
        let Ok((runtime, ..)) = self.runtime() else {
            return;
        };
        let egress = self.egress(&session.session_id, policy);
        if let Err(e) = runtime.attach_egress(sandbox, egress).await {
            tracing::warn!(session = %session.session_id, error = %e,
                "cannot serve an adopted sandbox's egress");
        }
    }

    /// This server's record of a session's egress.
    pub fn egress_record(&self, session_id: &str) -> EgressRecord {
        self.egress_book.get(session_id)
    }
}

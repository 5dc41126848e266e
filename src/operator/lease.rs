//! Leader election with a `coordination.k8s.io/v1` Lease: one replica
//! reconciles, the others wait and take over when the holder stops renewing.
//!
//! A candidate never compares its clock with the holder's: it notes when it
//! last saw the Lease change and takes over only after the Lease stayed
//! unchanged for a full lease duration. Every write carries the
//! resourceVersion it read, so two candidates cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};

pub const LEASE_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_secs(2);

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

enum Attempt {
    Held,
    Other { holder: String, version: String },
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Elector {
        Elector { api: Api::namespaced(client, namespace), name: name.into(), identity: identity.into() }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(acquired.unwrap_or_else(micro_now)),
            renew_time: Some(micro_now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt: create, renew, or (when `expired`) take over the Lease.
    async fn attempt(&self, expired_version: Option<&str>) -> Result<Attempt, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Attempt::Other { holder: String::new(), version: String::new() })
                }
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        let free = holder.is_empty() || expired_version == Some(version.as_str());
        if !mine && !free {
            return Ok(Attempt::Other { holder, version });
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        lease.spec = Some(self.spec(transitions, if mine { spec.acquire_time } else { None }));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            // Someone else wrote first: not ours (yet).
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Other { holder, version: String::new() }),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<(), kube::Error> {
        let mut seen: Option<(String, Instant)> = None;
        let mut logged = String::new();
        loop {
            let expired = seen
                .as_ref()
                .filter(|(_, at)| at.elapsed() > Duration::from_secs(LEASE_SECONDS as u64))
                .map(|(v, _)| v.clone());
            match self.attempt(expired.as_deref()).await {
                Ok(Attempt::Held) => return Ok(()),
                Ok(Attempt::Other { holder, version }) => {
                    if holder != logged {
                        tracing::info!(holder = %holder, "another replica holds the lease; waiting");
                        logged = holder;
                    }
                    if seen.as_ref().is_none_or(|(v, _)| *v != version) {
                        seen = Some((version, Instant::now()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "lease not readable; retrying"),
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Renews the Lease in the background; the returned future resolves when
    /// it could not be renewed for a lease duration (another replica may
    /// hold it by then, so the caller must stop reconciling).
    pub fn keep(self) -> Result<impl std::future::Future<Output = ()>, kube::Error> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut last_ok = Instant::now();
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                match self.attempt(None).await {
                    Ok(Attempt::Held) => last_ok = Instant::now(),
                    Ok(Attempt::Other { holder, .. }) => {
                        tracing::error!(holder = %holder, "the lease was taken over");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the lease");
                        if last_ok.elapsed() > Duration::from_secs(LEASE_SECONDS as u64) - RENEW_EVERY {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(());
        });
        Ok(async move {
            let _ = rx.await;
        })
    }
}

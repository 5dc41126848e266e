//! The Job executor: one Kubernetes Job per ScrubRun, running the
//! operator image's `lethe scrub --run <name>`. Secrets reach the Job only
//! as environment variables referencing Secret keys (`secretKeyRef`), so the
//! Job's ServiceAccount never needs to read Secrets and no secret value is
//! copied into the Job's spec.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, Container, EnvVar, EnvVarSource, PodSecurityContext, PodSpec, PodTemplateSpec,
            ResourceRequirements, SecretKeySelector, SecurityContext,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, PostParams, PropagationPolicy},
    runtime::controller::Action,
};

use super::{APPROVED_BY, Ctx, Result, exec, read_secret};
use crate::{
    api::{DeletionRequest, RunPhase, ScrubRun},
    scrub::driver::Credentials,
};

/// Label on every scrub Job, naming its run.
pub const RUN_LABEL: &str = "lethe.dev/scrub-run";
/// Label on every scrub Job, naming its DataStore.
pub const STORE_LABEL: &str = "lethe.dev/datastore";

/// A name as a label value (at most 63 characters).
fn label_value(name: &str) -> String {
    name.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string()
}

/// Environment variable names the Job reads (see [`inputs_from_env`]).
pub const ENV_USERNAME: &str = "LETHE_STORE_USERNAME";
pub const ENV_PASSWORD: &str = "LETHE_STORE_PASSWORD";
pub const ENV_CA: &str = "LETHE_STORE_CA";
pub const ENV_SALT: &str = "LETHE_ANONYMIZATION_SALT";
const ENV_SUBJECT: &str = "LETHE_SUBJECT_";
const ENV_HELD: &str = "LETHE_HELD_";
/// The namespace's declared relations as JSON `[[child table, parent table]]`,
/// so the Job need not read other Datasets.
const ENV_RELATIONS: &str = "LETHE_RELATIONS";
/// The Datasets of the store's other tables, as JSON (see
/// [`exec::neighbours_of`]): the Job lists the holds on them itself.
const ENV_NEIGHBOURS: &str = "LETHE_NEIGHBOURS";

/// The Job's name for a run: short enough for a pod label value.
pub fn job_name(run: &str) -> String {
    if run.len() + 6 <= 63 {
        format!("{run}-scrub")
    } else {
        let h = &crate::digest::sha256(run.as_bytes())[7..15];
        format!("{}-{h}-scrub", &run[..46])
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), optional: Some(false) }),
            ..EnvVarSource::default()
        }),
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

/// Env var name for an identifier type (`email` → `EMAIL`).
fn type_var(t: &str) -> String {
    t.to_ascii_uppercase()
}

/// Builds the Job for a run.
async fn build(ctx: &Ctx, run: &ScrubRun, targets: &exec::Targets) -> Result<std::result::Result<Job, String>> {
    let ns = run.namespace().unwrap_or_default();
    let mut env = vec![];
    env.push(plain_env(ENV_RELATIONS, &serde_json::to_string(&targets.relations).unwrap_or_default()));
    let neighbours: Vec<&crate::api::Dataset> = targets.neighbours.iter().map(|(n, _)| n).collect();
    env.push(plain_env(ENV_NEIGHBOURS, &serde_json::to_string(&neighbours).unwrap_or_default()));
    if let Some(r) = &targets.store.spec.secret_ref {
        env.push(secret_env(ENV_USERNAME, &r.name, &r.username_key));
        env.push(secret_env(ENV_PASSWORD, &r.name, &r.password_key));
    }
    if let Some(ca) = targets.store.spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
        env.push(secret_env(ENV_CA, &ca.name, &ca.key));
    }
    if let Some(s) = targets.dataset.spec.anonymization.as_ref().and_then(|a| a.salt_secret_ref.as_ref()) {
        env.push(secret_env(ENV_SALT, &s.name, &s.key));
    }
    if let Some(r) = &run.spec.deletion_request_ref {
        let Some(req) = Api::<DeletionRequest>::namespaced(ctx.client.clone(), &ns).get_opt(&r.name).await? else {
            return Ok(Err(format!("DeletionRequest {:?} does not exist", r.name)));
        };
        if let Some(ids) = &req.spec.subject.identifiers {
            // Inline identifiers (development only) are already in the request's spec.
            for (t, v) in ids {
                env.push(plain_env(&format!("{ENV_SUBJECT}{}", type_var(t)), v));
            }
        } else if let Some(s) = &req.spec.subject.secret_ref {
            // Only the Secret's keys (identifier types) are read here.
            let Some(values) = read_secret(&ctx.client, &ns, &s.name).await? else {
                return Ok(Err(format!("Secret {:?} naming the subject does not exist", s.name)));
            };
            for t in values.keys() {
                env.push(secret_env(&format!("{ENV_SUBJECT}{}", type_var(t)), &s.name, t));
            }
        }
    }
    // A neighbour's hold without its Secret keeps everything that Dataset refers to instead.
    let neighbour_holds = targets.neighbour_holds();
    let every = targets.holds.iter().map(|h| (h, true)).chain(neighbour_holds.iter().map(|h| (h, false)));
    for (i, (h, own)) in every.enumerate() {
        if let Some(s) = h.spec.subjects.as_ref().and_then(|s| s.secret_ref.as_ref()) {
            let Some(values) = read_secret(&ctx.client, &ns, &s.name).await? else {
                if !own {
                    continue;
                }
                return Ok(Err(format!("Secret {:?} of LegalHold {:?} does not exist", s.name, h.name_any())));
            };
            env.push(plain_env(&format!("{ENV_HELD}{i}_NAME"), &h.name_any()));
            for t in values.keys() {
                env.push(secret_env(&format!("{ENV_HELD}{i}_{}", type_var(t)), &s.name, t));
            }
        }
    }
    let labels: BTreeMap<String, String> = [
        (RUN_LABEL.to_string(), label_value(&run.name_any())),
        (STORE_LABEL.to_string(), label_value(&targets.store.name_any())),
        ("app.kubernetes.io/name".to_string(), "lethe".to_string()),
        ("app.kubernetes.io/component".to_string(), "scrub".to_string()),
    ]
    .into();
    let quantity = |s: &str| Quantity(s.to_string());
    // A files store's volume, mounted at its root.
    let volume = targets.store.spec.filesystem.as_ref().and_then(|f| {
        let claim = f.persistent_volume_claim.clone()?;
        Some((
            k8s_openapi::api::core::v1::Volume {
                name: "data".into(),
                persistent_volume_claim: Some(k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                    claim_name: claim,
                    read_only: Some(false),
                }),
                ..Default::default()
            },
            k8s_openapi::api::core::v1::VolumeMount {
                name: "data".into(),
                mount_path: f.root.clone(),
                ..Default::default()
            },
        ))
    });
    let container = Container {
        name: "scrub".into(),
        image: Some(ctx.config.image.clone()),
        command: Some(vec![ctx.config.command.clone()]),
        args: Some(vec!["scrub".into(), "--run".into(), run.name_any(), "--namespace".into(), ns.clone()]),
        env: Some(env),
        volume_mounts: volume.as_ref().map(|(_, m)| vec![m.clone()]),
        resources: Some(ResourceRequirements {
            requests: Some([("cpu".to_string(), quantity("100m")), ("memory".to_string(), quantity("64Mi"))].into()),
            limits: Some([("cpu".to_string(), quantity("1")), ("memory".to_string(), quantity("256Mi"))].into()),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Ok(Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(&run.name_any())),
            namespace: Some(ns),
            labels: Some(labels.clone()),
            owner_references: Some(vec![run.controller_owner_ref(&()).expect("a stored run has a uid")]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: ctx.config.job_service_account.clone(),
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: volume.map(|(v, _)| vec![v]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }))
}

fn job_condition(job: &Job, type_: &str) -> Option<String> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == "True"))
        .map(|c| c.message.clone().unwrap_or_default())
}

/// Makes sure the run has a live Job, or records why it cannot.
pub async fn ensure(ctx: &Arc<Ctx>, run: &ScrubRun) -> Result<Action> {
    let ns = run.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let name = job_name(&run.name_any());
    match jobs.get_opt(&name).await? {
        None => {
            // At most maxConcurrentRuns Jobs against one store at a time;
            // counting and creating happen under the store's lock.
            let t = match exec::targets(&ctx.client, run).await? {
                Ok(t) => t,
                Err(m) => {
                    exec::fail(&ctx.client, run, "NotFound", m).await?;
                    return Ok(Action::await_change());
                }
            };
            let lock = ctx.store_lock(&format!("{ns}/{}", t.store.name_any()));
            let _guard = lock.lock_owned().await;
            let limit = t.store.spec.limits.max_concurrent_runs.max(1) as usize;
            let selector = format!("{STORE_LABEL}={}", label_value(&t.store.name_any()));
            let active = jobs
                .list(&kube::api::ListParams::default().labels(&selector))
                .await?
                .items
                .iter()
                .filter(|j| job_condition(j, "Complete").is_none() && job_condition(j, "Failed").is_none())
                .count();
            if active >= limit {
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            grant(ctx, run, &t).await?;
            let job = match build(ctx, run, &t).await? {
                Ok(j) => j,
                Err(m) => {
                    exec::fail(&ctx.client, run, "NotFound", m).await?;
                    return Ok(Action::await_change());
                }
            };
            match jobs
                .create(&PostParams { field_manager: Some(super::MANAGER.into()), ..PostParams::default() }, &job)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            ctx.event(run, false, "JobCreated", format!("scrub Job {name} created")).await;
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        Some(job) => {
            let phase = run.status.as_ref().and_then(|s| s.phase);
            if let Some(msg) = job_condition(&job, "Failed") {
                exec::fail(&ctx.client, run, "JobFailed", format!("scrub Job {name} failed: {msg}")).await?;
                return Ok(Action::await_change());
            }
            if job_condition(&job, "Complete").is_some() {
                if phase == Some(RunPhase::AwaitingApproval) && run.annotations().contains_key(APPROVED_BY) {
                    // Approved after the Job stopped at the brake: a fresh Job continues.
                    let dp = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..DeleteParams::default()
                    };
                    jobs.delete(&name, &dp).await?;
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                if phase == Some(RunPhase::AwaitingApproval) {
                    super::run::announce_stall(ctx, run).await;
                    ctx.metrics.blast_radius_stop(&ns, &run.spec.dataset_ref.name);
                } else {
                    exec::fail(
                        &ctx.client,
                        run,
                        "JobEnded",
                        format!("scrub Job {name} ended without finishing the run"),
                    )
                    .await?;
                }
                return Ok(Action::await_change());
            }
            Ok(Action::requeue(Duration::from_secs(30)))
        }
    }
}

/// What one run's Job may do, as a Role bound to the Job's ServiceAccount
/// and owned by the run (so it goes with it): read that run and write its
/// status, read its Dataset and DataStore, and list LegalHolds (a hold
/// created up to the Job's start still stops it). Nothing else: no other
/// run, Dataset or store, no Secrets.
async fn grant(ctx: &Ctx, run: &ScrubRun, t: &exec::Targets) -> Result<()> {
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    let ns = run.namespace().unwrap_or_default();
    let name = job_name(&run.name_any());
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(ns.clone()),
        labels: Some([(RUN_LABEL.to_string(), label_value(&run.name_any()))].into()),
        owner_references: Some(vec![run.controller_owner_ref(&()).expect("a stored run has a uid")]),
        ..ObjectMeta::default()
    };
    let rule = |resource: &str, names: Vec<String>, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec!["lethe.dev".into()]),
        resources: Some(vec![resource.into()]),
        resource_names: (!names.is_empty()).then_some(names),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![
            rule("scrubruns", vec![run.name_any()], &["get"]),
            rule("scrubruns/status", vec![run.name_any()], &["get", "patch"]),
            rule("datasets", vec![t.dataset.name_any()], &["get"]),
            rule("datastores", vec![t.store.name_any()], &["get"]),
            rule("legalholds", vec![], &["list"]),
        ]),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: name.clone() },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: ctx.config.job_service_account.clone().unwrap_or_else(|| "default".into()),
            namespace: Some(ns.clone()),
            ..Subject::default()
        }]),
    };
    let pp = kube::api::PatchParams::apply(super::MANAGER).force();
    Api::<Role>::namespaced(ctx.client.clone(), &ns).patch(&name, &pp, &kube::api::Patch::Apply(&role)).await?;
    Api::<RoleBinding>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &kube::api::Patch::Apply(&binding))
        .await?;
    Ok(())
}

/// A Job's inputs, from its environment.
pub fn inputs_from_env() -> exec::Inputs {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let mut inputs = exec::Inputs {
        credentials: Credentials { username: var(ENV_USERNAME), password: var(ENV_PASSWORD), ca_pem: var(ENV_CA) },
        anonymization_salt: var(ENV_SALT),
        ..exec::Inputs::default()
    };
    let mut subject = BTreeMap::new();
    let mut held: BTreeMap<String, (String, BTreeMap<String, Vec<String>>)> = BTreeMap::new();
    for (k, v) in std::env::vars() {
        if let Some(t) = k.strip_prefix(ENV_SUBJECT) {
            subject.insert(t.to_ascii_lowercase(), v.trim().to_string());
        } else if let Some(rest) = k.strip_prefix(ENV_HELD)
            && let Some((i, t)) = rest.split_once('_')
        {
            let e = held.entry(i.to_string()).or_default();
            if t == "NAME" {
                e.0 = v;
            } else {
                let values = super::identifier_lines(&v);
                e.1.insert(t.to_ascii_lowercase(), values);
            }
        }
    }
    if !subject.is_empty() {
        inputs.identifiers = Some(subject);
    }
    inputs.held = held.into_values().collect();
    inputs
}

/// `lethe scrub --run`: executes one run from inside its Job.
pub async fn run_in_job(namespace: &str, name: &str) -> Result<exec::Ended> {
    let client = kube::Client::try_default().await?;
    let api: Api<ScrubRun> = Api::namespaced(client.clone(), namespace);
    let run = api.get(name).await?;
    let relations: Vec<(String, String)> =
        std::env::var(ENV_RELATIONS).ok().and_then(|v| serde_json::from_str(&v).ok()).unwrap_or_default();
    // Unreadable, the run would not know what other Datasets' holds keep here: it stops.
    let neighbours: Vec<crate::api::Dataset> = match std::env::var(ENV_NEIGHBOURS) {
        Err(_) => vec![],
        Ok(v) => match serde_json::from_str(&v) {
            Ok(r) => r,
            Err(e) => {
                let m = format!("{ENV_NEIGHBOURS} cannot be read ({e}); nothing was deleted");
                exec::fail(&client, &run, "InvalidConfiguration", m).await?;
                return Ok(exec::Ended::Done);
            }
        },
    };
    let targets = match exec::targets_of_run(&client, &run, relations, neighbours).await? {
        Ok(t) => t,
        Err(m) => {
            exec::fail(&client, &run, "NotFound", m).await?;
            return Ok(exec::Ended::Done);
        }
    };
    let inputs = inputs_from_env();
    // Subject holds by digest were checked by the DeletionRequest before this run was created.
    exec::execute(&client, &run, targets, inputs, "", "job", &exec::NoObserver).await
}

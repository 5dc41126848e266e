//! The installation's digest salt: `LETHE_DIGEST_SALT`, else the Secret
//! `lethe-digest-salt` (key `salt`) in the operator's namespace, created
//! with a random value on first start. Changing it changes every digest, so
//! LegalHolds naming subjects by digest stop matching; keep it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

pub const SECRET: &str = "lethe-digest-salt";
pub const KEY: &str = "salt";

pub async fn load_or_create(client: &Client, namespace: &str) -> Result<String, String> {
    if let Ok(s) = std::env::var("LETHE_DIGEST_SALT")
        && !s.is_empty()
    {
        return Ok(s);
    }
    for _ in 0..3 {
        if let Some(v) = super::read_secret(client, namespace, SECRET).await.map_err(|e| e.to_string())?
            && let Some(s) = v.get(KEY)
        {
            return Ok(s.clone());
        }
        let salt = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let secret = Secret {
            metadata: ObjectMeta { name: Some(SECRET.into()), ..ObjectMeta::default() },
            string_data: Some(BTreeMap::from([(KEY.to_string(), salt)])),
            ..Secret::default()
        };
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        match api
            .create(&PostParams { field_manager: Some(super::MANAGER.into()), ..PostParams::default() }, &secret)
            .await
        {
            Ok(_) => {}
            // Another replica created it first: read theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(format!("cannot create Secret {namespace}/{SECRET}: {e}")),
        }
    }
    Err(format!("Secret {namespace}/{SECRET} has no key {KEY:?}"))
}

//! L0, pure: the manifest model, parsing and validation. No I/O.
//! TEMPORARY STUB: replaced by the real module (branch wt-manifest).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: Option<String>,
    #[serde(default)]
    pub images: BTreeMap<String, Image>,
    #[serde(default)]
    pub pods: BTreeMap<String, Pod>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image { pub from: Option<String>, pub rootfs: Option<String>, #[serde(default)] pub layers: Vec<String> }
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pod { #[serde(default)] pub replicas: Option<u32>, #[serde(default)] pub depends_on: Vec<String>, pub restart: Option<String>, pub containers: Vec<Container> }
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container { pub name: String, pub image: Option<String>, pub command: Vec<String>, #[serde(default)] pub env: BTreeMap<String, String>, pub working_dir: Option<String>, #[serde(default)] pub resources: Res }
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Res { pub memory: Option<u64>, pub pids: Option<u64>, pub cpu: Option<u64> }

#[derive(Debug, Clone, Serialize)]
pub struct ValidManifest(pub Manifest);
impl ValidManifest {
    pub fn name(&self) -> Option<&str> { self.0.name.as_deref() }
    pub fn to_yaml(&self) -> String { serde_json::to_string_pretty(&self.0).unwrap_or_default() }
    pub fn to_json(&self) -> String { serde_json::to_string_pretty(&self.0).unwrap_or_default() }
}
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct ManifestError { msg: String }
impl ManifestError { pub fn render(&self) -> String { format!("error: {}", self.msg) } }
pub fn load(source: &str, origin: &Path) -> Result<ValidManifest, ManifestError> {
    serde_saphyr::from_str::<Manifest>(source).map(ValidManifest).map_err(|e| ManifestError { msg: format!("{}: {e}", origin.display()) })
}
pub fn schema_json() -> String { "{}\n".into() }

//! L1, pure: desired state and dependency graph. No I/O.
//! TEMPORARY STUB: replaced by the real module (branch wt-manifest).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub mod desired;

use std::path::Path;
use std::collections::BTreeMap;
use crate::manifest::ValidManifest;
use desired::*;

pub fn desired_state(m: &ValidManifest, project: &str, base_dir: &Path) -> DesiredState {
    let mut pods = BTreeMap::new();
    for (name, p) in &m.0.pods {
        let containers = p.containers.iter().map(|c| {
            let mut layers = vec![];
            let img = c.image.clone().unwrap_or("host".into());
            let mut cur = Some(img.clone());
            let mut chain = vec![];
            while let Some(i) = cur.take() {
                if i == "host" { chain.push(LayerPlan::Host); break; }
                let im = &m.0.images[&i];
                for l in im.layers.iter().rev() { chain.push(LayerPlan::Dir { path: base_dir.join(l), target: "/".into() }); }
                if let Some(r) = &im.rootfs { chain.push(LayerPlan::Dir { path: base_dir.join(r), target: "/".into() }); }
                cur = im.from.clone();
            }
            chain.reverse(); layers.extend(chain);
            ContainerPlan { name: c.name.clone(), image: img, rootfs: RootfsPlan { layers }, command: c.command.clone(), env: c.env.clone(), working_dir: c.working_dir.clone(),
              resources: Resources { cpu_millis: c.resources.cpu, memory_bytes: c.resources.memory, pids: c.resources.pids } }
        }).collect();
        pods.insert(name.clone(), PodPlan { name: name.clone(), replicas: p.replicas.unwrap_or(1), labels: BTreeMap::new(),
            depends_on: p.depends_on.iter().map(|d| Dependency { pod: d.clone(), condition: Condition::Started }).collect(),
            restart: match p.restart.as_deref() { Some("always") => RestartPolicy::Always, Some("on-failure") => RestartPolicy::OnFailure, _ => RestartPolicy::Never }, containers });
    }
    let mut waves: Vec<Vec<String>> = vec![];
    let mut done: Vec<String> = vec![];
    while done.len() < pods.len() {
        let w: Vec<String> = pods.values().filter(|p| !done.contains(&p.name) && p.depends_on.iter().all(|d| done.contains(&d.pod))).map(|p| p.name.clone()).collect();
        if w.is_empty() { break; }
        done.extend(w.clone()); waves.push(w);
    }
    DesiredState { project: project.into(), pods, services: BTreeMap::new(), waves }
}
pub mod graph {
    use super::desired::DesiredState;
    pub fn render_order(d: &DesiredState) -> String { d.waves.iter().enumerate().map(|(i, w)| format!("{}. {}\n", i + 1, w.join(", "))).collect() }
    pub fn render_dot(d: &DesiredState) -> String { render_order(d) }
    pub fn render_mermaid(d: &DesiredState) -> String { render_order(d) }
}

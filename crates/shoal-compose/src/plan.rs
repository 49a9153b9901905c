//! What a deploy does to a stack's services already in the cluster: create the new ones,
//! update those whose spec changed, leave the others alone (their tasks and their
//! version), and remove those dropped from the file only when asked (`--prune`, as docker).

use shoal_types::{Service, ServiceSpec};

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create(ServiceSpec),
    /// `version`: the service's version the spec was compared with; the update is refused
    /// if the service changed since (another deploy, a `service update`).
    Update {
        id: String,
        version: u64,
        spec: ServiceSpec,
    },
    Unchanged {
        id: String,
        name: String,
    },
    Remove {
        id: String,
        name: String,
    },
}

/// `desired`: the file's services, networks given by id (as the cluster stores them).
/// `current`: the stack's services in the cluster. `same_image(desired, stored)`: whether
/// the stored image (pinned to a digest by the manager) is the one the file names.
pub fn plan(
    desired: Vec<ServiceSpec>,
    current: &[Service],
    prune: bool,
    same_image: &dyn Fn(&str, &str) -> bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for mut spec in desired {
        let Some(cur) = current.iter().find(|s| s.spec.name == spec.name) else {
            steps.push(Step::Create(spec));
            continue;
        };
        // What the file cannot say is kept: `update --force`'s counter, as docker's CLI does.
        spec.task_template.force_update = cur.spec.task_template.force_update;
        let mut compared = spec.clone();
        let (want, have) = (
            &compared.task_template.container_spec.image,
            &cur.spec.task_template.container_spec.image,
        );
        if let (Some(w), Some(h)) = (want, have)
            && same_image(w, h)
        {
            compared.task_template.container_spec.image = Some(h.clone());
        }
        if compared == cur.spec {
            steps.push(Step::Unchanged {
                id: cur.id.clone(),
                name: spec.name,
            });
        } else {
            steps.push(Step::Update {
                id: cur.id.clone(),
                version: cur.version,
                spec,
            });
        }
    }
    if prune {
        for cur in current {
            let kept = steps.iter().any(|s| match s {
                Step::Create(spec) | Step::Update { spec, .. } => spec.name == cur.spec.name,
                Step::Unchanged { name, .. } => *name == cur.spec.name,
                Step::Remove { .. } => false,
            });
            if !kept {
                steps.push(Step::Remove {
                    id: cur.id.clone(),
                    name: cur.spec.name.clone(),
                });
            }
        }
    }
    steps
}

/// The image without the `@sha256:...` the manager pins it to.
pub fn unpinned(image: &str) -> &str {
    image.split_once('@').map_or(image, |(name, _)| name)
}

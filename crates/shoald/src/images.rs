//! `image ls|rm|prune` for this node: its agent's image store, and the local tasks whose
//! containers use an image (which `rm` refuses and `prune` keeps).

use shoal_api::{ImageSummary, ImagesPruned};

use crate::errors::DaemonError;
use shoal_image::store::find;
use shoal_image::{ImageError, ImageRecord, ImageRef, Images};

fn image_error(e: ImageError) -> DaemonError {
    match e {
        ImageError::NoSuchImage(_) => DaemonError::NotFound(e.to_string()),
        other => crate::errors::internal("the image store failed", other),
    }
}

/// The tasks (by name) of `users` (task name, image) whose image is `image`.
fn users_of<'a>(
    records: &[ImageRecord],
    image: &ImageRecord,
    users: &'a [(String, String)],
) -> Vec<&'a str> {
    let mut names: Vec<&str> = users
        .iter()
        .filter(|(_, i)| find(records, i).is_some_and(|r| r.digest == image.digest))
        .map(|(t, _)| t.as_str())
        .collect();
    names.sort_unstable();
    names
}

/// A record as `image ls` shows it (pure but for the created time, read from the config).
fn summary(
    images: &Images,
    records: &[ImageRecord],
    r: &ImageRecord,
    users: &[(String, String)],
) -> ImageSummary {
    let refs: Vec<ImageRef> = r
        .references
        .iter()
        .filter_map(|n| ImageRef::parse(n).ok())
        .collect();
    let mut repo_digests: Vec<String> = refs
        .iter()
        .map(|n| format!("{}@{}", n.familiar_name(), r.repo_digest))
        .collect();
    repo_digests.dedup();
    ImageSummary {
        repo_tags: refs
            .iter()
            .filter(|n| n.tag().is_some())
            .map(ImageRef::familiar)
            .collect(),
        repo_digests,
        id: r.config.clone(),
        created: images.store().created(r).unwrap_or_default(),
        size: r.size,
        containers: users_of(records, r, users)
            .into_iter()
            .map(str::to_string)
            .collect(),
    }
}

pub async fn list(
    images: Images,
    users: &[(String, String)],
) -> Result<Vec<ImageSummary>, DaemonError> {
    let records = images.list().await.map_err(image_error)?;
    Ok(records
        .iter()
        .map(|r| summary(&images, &records, r, users))
        .collect())
}

/// docker's refusal: "conflict: unable to remove repository reference …".
fn conflict(name: &str, image: &ImageRecord, tasks: &[&str]) -> DaemonError {
    DaemonError::Conflict(format!(
        "conflict: unable to remove repository reference \"{name}\" - container {} is using \
         its referenced image {} (remove the service first)",
        tasks.join(", "),
        image.id()
    ))
}

pub async fn remove(
    images: Images,
    name: &str,
    users: &[(String, String)],
) -> Result<Vec<String>, DaemonError> {
    let in_use: Vec<String> = users.iter().map(|(_, i)| i.clone()).collect();
    match images.remove(name, &in_use).await {
        Ok(lines) => Ok(lines),
        Err(ImageError::InUse { .. }) => {
            let records = images.list().await.map_err(image_error)?;
            let image = find(&records, name)
                .ok_or_else(|| DaemonError::NotFound(format!("No such image: {name}")))?;
            Err(conflict(name, image, &users_of(&records, image, users)))
        }
        Err(e) => Err(image_error(e)),
    }
}

pub async fn prune(
    images: Images,
    users: &[(String, String)],
) -> Result<ImagesPruned, DaemonError> {
    let in_use: Vec<String> = users.iter().map(|(_, i)| i.clone()).collect();
    let gone = images.prune(&in_use).await.map_err(image_error)?;
    let mut out = ImagesPruned::default();
    for r in &gone {
        for n in r.references.iter().filter_map(|n| ImageRef::parse(n).ok()) {
            out.images_deleted
                .push(format!("untagged: {}", n.familiar()));
        }
        out.images_deleted.push(format!("deleted: {}", r.digest));
        out.space_reclaimed += r.size;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: char, refs: &[&str]) -> ImageRecord {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        ImageRecord {
            digest: d(n),
            repo_digest: d(n),
            references: refs
                .iter()
                .map(|r| ImageRef::parse(r).unwrap().to_string())
                .collect(),
            config: d('c'),
            layers: vec![],
            size: 1,
        }
    }

    #[test]
    fn the_conflict_names_the_task_as_docker_does() {
        let records = [rec('a', &["busybox"]), rec('b', &["nginx"])];
        let users = vec![
            (
                "web.1.x".to_string(),
                format!("busybox:latest@{}", records[0].digest),
            ),
            ("db.1.y".to_string(), "nginx".to_string()),
        ];
        let tasks = users_of(&records, &records[0], &users);
        assert_eq!(tasks, ["web.1.x"]);
        let e = shoal_api::ApiError::from(conflict("busybox", &records[0], &tasks));
        assert_eq!(e.status, 409);
        assert_eq!(
            e.message,
            "conflict: unable to remove repository reference \"busybox\" - container web.1.x \
             is using its referenced image cccccccccccc (remove the service first)"
        );
    }
}

//! The store's records: tags that move, untagging, removal and pruning with garbage
//! collection of blobs and unpacked layers (local images, no registry).

mod common;

use std::fs;

use common::Layer;
use shoal_image::{ImageError, ImageRecord, ImageRef, Store};

fn local_image(store: &Store, content: &[u8]) -> ImageRecord {
    let layer = store
        .write_blob(&Layer::new().file("f", content).gzip())
        .unwrap();
    store.unpack(&layer).unwrap();
    let config = store.write_blob(content).unwrap();
    ImageRecord {
        digest: config.clone(),
        repo_digest: config.clone(),
        references: Default::default(),
        config,
        layers: vec![layer],
        size: 0,
    }
}

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

#[test]
fn tags_move_untag_first_then_delete_and_prune_collects_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let one = local_image(&store, b"one");
    let two = local_image(&store, b"two");
    store.put(one.clone(), Some(&r("app:1"))).unwrap();
    store.put(one.clone(), Some(&r("app:latest"))).unwrap();
    store.put(two.clone(), Some(&r("app:2"))).unwrap();
    // `app:latest` moves to image two.
    store.put(two.clone(), Some(&r("app"))).unwrap();
    assert_eq!(store.get("app").unwrap().digest, two.digest);
    assert_eq!(
        store
            .get("app:1")
            .unwrap()
            .references
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["docker.io/library/app:1".to_string()]
    );

    // Two names: removing one only untags.
    assert_eq!(
        store.remove("app:2", &[]).unwrap(),
        vec!["Untagged: docker.io/library/app:2"]
    );
    assert!(store.get("app:latest").is_ok());
    let err = store
        .remove("app", &["app:latest".to_string()])
        .unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err}");
    assert_eq!(
        store.remove("app", &[]).unwrap(),
        vec![
            "Untagged: docker.io/library/app:latest".to_string(),
            format!("Deleted: {}", two.digest)
        ]
    );
    assert_eq!(
        store.get("app").unwrap_err().to_string(),
        "No such image: app"
    );
    assert!(!store.has_blob(&two.layers[0]), "its blobs went with it");
    assert!(!store.layer_dir(&two.layers[0]).unwrap().exists());
    assert!(store.has_blob(&one.layers[0]));

    // In use by its id prefix: kept; then pruned with everything it held.
    let id = one.id().to_string();
    assert!(store.prune(std::slice::from_ref(&id)).unwrap().is_empty());
    assert_eq!(
        store.prune(&[]).unwrap(),
        vec![store_view(&one, &["app:1"])]
    );
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(tmp.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

fn store_view(image: &ImageRecord, refs: &[&str]) -> ImageRecord {
    let mut image = image.clone();
    image.references = refs.iter().map(|s| r(s).to_string()).collect();
    image
}

//! The namespace registry (`SHOAL_NETNS_REGISTRY`). Its own test binary: it sets an
//! environment variable, which is process-wide.

use shoal_net::{REGISTRY_ENV, create_netns, delete_netns};

#[test]
fn created_namespaces_are_recorded_and_forgotten_on_delete() {
    let dir = std::env::temp_dir().join(format!("shoaltest-{}-registry", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // SAFETY (of the call, which is `unsafe` in edition 2024): this test binary has no other
    // threads that read the environment.
    unsafe { std::env::set_var(REGISTRY_ENV, &dir) };
    let name = format!("shoaltest-{}-reg", std::process::id());
    let _ = delete_netns(&name);

    create_netns(&name).unwrap();
    let recorded = dir.join(&name).exists();
    let deleted = delete_netns(&name).unwrap();
    let forgotten = !dir.join(&name).exists();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        recorded,
        "create_netns should record {name} in {}",
        dir.display()
    );
    assert!(deleted);
    assert!(
        forgotten,
        "delete_netns should remove {name} from the registry"
    );
}

//! The tasks of each service of each network of a view, kept beside the view by following its
//! versions. Pure.
//!
//! Why: an endpoint change rebuilds the names and VIP backends of the services it touched, and
//! finding a service's tasks in the network's task map (keyed by task id) meant walking every
//! task of the network, on every node, at every change. Following the view's difference
//! (persistent maps: the walk costs the change) keeps each service's task ids at hand.

use std::collections::{BTreeMap, BTreeSet};

use imbl::OrdMap;

use super::{EndpointView, NetworkEndpoints, TaskEndpoint};
use crate::diff::changes;

/// Task ids by service id, by network id, as of the last view followed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceTasks {
    networks: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl ServiceTasks {
    /// The index of `view`, built whole.
    pub fn of(view: &EndpointView) -> ServiceTasks {
        let mut index = ServiceTasks::default();
        index.follow(&EndpointView::default(), view);
        index
    }

    /// Follows the change from `old` (the view followed last) to `new`: costs the difference
    /// between the two, not the size of either.
    pub fn follow(&mut self, old: &EndpointView, new: &EndpointView) {
        let empty = OrdMap::new();
        for (id, was, now) in changes(&old.networks, &new.networks) {
            let Some(now) = now else {
                self.networks.remove(id);
                continue;
            };
            let before = was.map_or(&empty, |n| &n.tasks);
            let services = self.networks.entry(id.clone()).or_default();
            for (task, a, b) in changes(before, &now.tasks) {
                if let Some(a) = a
                    && let Some(ids) = services.get_mut(&a.service_id)
                {
                    ids.remove(task);
                    if ids.is_empty() {
                        services.remove(&a.service_id);
                    }
                }
                if let Some(b) = b {
                    services
                        .entry(b.service_id.clone())
                        .or_default()
                        .insert(task.clone());
                }
            }
            if services.is_empty() {
                self.networks.remove(id);
            }
        }
    }

    /// The tasks of `service` in `n` (network `net` of the view followed last), in task id
    /// order, as a filter of `n.tasks` by service would give them.
    pub fn tasks<'a>(
        &'a self,
        net: &str,
        n: &'a NetworkEndpoints,
        service: &str,
    ) -> impl Iterator<Item = &'a TaskEndpoint> + 'a {
        self.networks
            .get(net)
            .and_then(|s| s.get(service))
            .into_iter()
            .flatten()
            .filter_map(|id| n.tasks.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::NetworkInfo;

    fn task(id: &str, service: &str) -> TaskEndpoint {
        TaskEndpoint {
            id: id.into(),
            name: format!("{service}.{id}"),
            service_id: service.into(),
            addr: "10.0.0.2/24".parse().unwrap(),
            node_id: "n1".into(),
            vtep: "192.168.0.1".parse().unwrap(),
            ready: true,
        }
    }

    fn network(id: &str, tasks: &[(&str, &str)]) -> NetworkEndpoints {
        let mut n = NetworkEndpoints::empty(NetworkInfo {
            id: id.into(),
            name: id.into(),
            vni: 4097,
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            ingress: false,
        });
        for (t, s) in tasks {
            n.tasks.insert(t.to_string(), task(t, s));
        }
        n
    }

    fn view(networks: Vec<NetworkEndpoints>) -> EndpointView {
        EndpointView {
            version: 1,
            networks: networks
                .into_iter()
                .map(|n| (n.info.id.clone(), n))
                .collect(),
        }
    }

    /// What the index must say: every task of the service, filtered from the whole map.
    fn filtered<'a>(v: &'a EndpointView, net: &str, service: &str) -> Vec<&'a str> {
        v.networks[net]
            .tasks
            .values()
            .filter(|t| t.service_id == service)
            .map(|t| t.id.as_str())
            .collect()
    }

    fn indexed<'a>(i: &'a ServiceTasks, v: &'a EndpointView, net: &str, s: &str) -> Vec<&'a str> {
        i.tasks(net, &v.networks[net], s)
            .map(|t| t.id.as_str())
            .collect()
    }

    #[test]
    fn following_changes_gives_what_a_filter_of_every_task_gives() {
        let v1 = view(vec![
            network("a", &[("t3", "web"), ("t1", "web"), ("t2", "db")]),
            network("b", &[("t4", "web")]),
        ]);
        let mut index = ServiceTasks::default();
        index.follow(&EndpointView::default(), &v1);
        assert_eq!(index, ServiceTasks::of(&v1));
        assert_eq!(indexed(&index, &v1, "a", "web"), ["t1", "t3"]);
        assert_eq!(indexed(&index, &v1, "a", "web"), filtered(&v1, "a", "web"));
        assert_eq!(indexed(&index, &v1, "b", "web"), ["t4"]);

        // A task leaves, one comes, one moves to another service; network b goes.
        let mut v2 = v1.clone();
        v2.networks.remove("b");
        let a = v2.networks.get_mut("a").unwrap();
        a.tasks.remove("t1");
        a.tasks.insert("t5".into(), task("t5", "web"));
        a.tasks.insert("t2".into(), task("t2", "web"));
        index.follow(&v1, &v2);
        assert_eq!(index, ServiceTasks::of(&v2));
        assert_eq!(indexed(&index, &v2, "a", "web"), ["t2", "t3", "t5"]);
        assert_eq!(indexed(&index, &v2, "a", "web"), filtered(&v2, "a", "web"));
        assert!(indexed(&index, &v2, "a", "db").is_empty());
        // The last task of a service takes its entry along.
        assert!(!index.networks["a"].contains_key("db"));
        assert!(!index.networks.contains_key("b"));
    }
}

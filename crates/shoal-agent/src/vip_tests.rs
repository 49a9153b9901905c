use super::*;

/// Two overlay networks and ingress: `web` (vip) on net1 and net2, `rr` (dnsrr) on net1,
/// `mesh` (vip) on ingress.
fn view() -> EndpointView {
    let svc = |id: &str, mode: &str, vip: Option<&str>| {
        serde_json::json!({"id": id, "name": id, "mode": mode, "vip": vip, "ports": [],
            "aliases": [], "dns_ttl": null})
    };
    let task = |id: &str, service: &str, addr: &str| {
        serde_json::json!({"id": id, "name": id, "service_id": service, "addr": addr,
            "node_id": "n1", "vtep": "192.168.1.1"})
    };
    let net = |id: &str, ingress: bool, services: serde_json::Value, tasks: serde_json::Value| {
        serde_json::json!({"info": {"id": id, "name": id, "vni": 4097, "subnet": "10.0.0.0/8",
            "gateway": "10.0.0.1", "ingress": ingress}, "services": services, "tasks": tasks})
    };
    serde_json::from_value(serde_json::json!({"version": 1, "networks": {
        "net1aaaaaaaaaaaa": net("net1aaaaaaaaaaaa", false,
            serde_json::json!({"websvcid00000": svc("websvcid00000", "vip", Some("10.1.0.2/24")),
                               "rrsvc": svc("rrsvc", "dnsrr", None)}),
            serde_json::json!({"t2": task("t2", "websvcid00000", "10.1.0.4/24"),
                               "t1": task("t1", "websvcid00000", "10.1.0.3/24"),
                               "t3": task("t3", "rrsvc", "10.1.0.5/24")})),
        "net2bbbbbbbbbbbb": net("net2bbbbbbbbbbbb", false,
            serde_json::json!({"websvcid00000": svc("websvcid00000", "vip", Some("10.2.0.2/24"))}),
            serde_json::json!({"t1": task("t1", "websvcid00000", "10.2.0.3/24")})),
        "ingress": net("ingress", true,
            serde_json::json!({"mesh": svc("mesh", "vip", Some("10.255.0.2/16"))}),
            serde_json::json!({"t9": task("t9", "mesh", "10.255.0.3/16")})),
    }}))
    .expect("a valid view")
}

#[test]
fn the_node_config_holds_every_vip_of_the_nodes_networks_but_ingress() {
    let cfg = node_config(&view());
    let keys: Vec<_> = cfg.services.keys().cloned().collect();
    assert_eq!(
        keys,
        [
            ("net1aaaaaaaaaaaa".to_string(), "websvcid00000".to_string()),
            ("net2bbbbbbbbbbbb".to_string(), "websvcid00000".to_string()),
        ]
    );
    let web1 = &cfg.services[&keys[0]];
    assert_eq!(web1.vip.to_string(), "10.1.0.2");
    assert!(web1.ports.is_empty(), "every port of the VIP");
    let backends: Vec<String> = web1.backends.iter().map(|b| b.to_string()).collect();
    assert_eq!(backends, ["10.1.0.3", "10.1.0.4"]);
}

#[test]
fn a_sandbox_config_holds_only_its_networks() {
    let v = view();
    let cfg = sandbox_config(&v, &["net2bbbbbbbbbbbb".to_string()]);
    let ids: Vec<_> = cfg.services.keys().cloned().collect();
    assert_eq!(ids, ["websvcid0000_net2bbbbbbbb"]);
    assert_eq!(cfg.services[&ids[0]].vip.to_string(), "10.2.0.2");
    cfg.validate().expect("nftables accepts it");
}

#[test]
fn choices_parse_as_the_flag_spells_them() {
    for c in [VipChoice::Auto, VipChoice::Ebpf, VipChoice::Nftables] {
        assert_eq!(c.to_string().parse::<VipChoice>(), Ok(c));
    }
    assert!("ipvs".parse::<VipChoice>().unwrap_err().contains("auto"));
}

#[test]
fn nftables_on_request_says_so() {
    let lb = VipBalancer::select(VipChoice::Nftables).expect("nftables");
    assert_eq!(lb.kind(), "nftables");
    assert!(
        lb.info()
            .fallback_reason
            .is_some_and(|r| r.contains("--vip-balancer nftables"))
    );
}

/// A load failure (forced: a directory that is no cgroup) falls back under `auto` and names the
/// error; under `ebpf` it is an error that says what to do.
#[test]
fn a_failed_load_falls_back_under_auto_and_fails_under_ebpf() {
    let broken = shoal_bpf::Options {
        cgroup: Some("/proc".into()),
    };
    let lb = VipBalancer::select_with(VipChoice::Auto, &broken).expect("auto never fails");
    let info = lb.info();
    assert_eq!(info.kind, "nftables");
    let reason = info.fallback_reason.expect("a reason");
    assert!(
        reason.contains("could not load") && reason.contains("/proc"),
        "{reason}"
    );

    let err = VipBalancer::select_with(VipChoice::Ebpf, &broken).expect_err("ebpf must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("/proc") && msg.contains("--vip-balancer auto"),
        "{msg}"
    );
}

/// One change to a view.
type Step = Box<dyn Fn(&mut EndpointView)>;

/// The config updated from the last one and the change between two views is the config
/// made from scratch, over a run of changes: tasks come and go, a VIP changes, a service
/// turns dnsrr, a network goes and comes back.
#[test]
fn the_updated_node_config_equals_a_full_build() {
    let start = view();
    let mut cfg = node_config(&start);
    let mut old = start.clone();
    let mut steps: Vec<Step> = Vec::new();
    let net1 = "net1aaaaaaaaaaaa".to_string();
    let n1 = net1.clone();
    steps.push(Box::new(move |v| {
        let n = v.networks.get_mut(&n1).expect("net1");
        n.tasks.remove("t2");
    }));
    let n1 = net1.clone();
    steps.push(Box::new(move |v| {
        let n = v.networks.get_mut(&n1).expect("net1");
        let mut t = n.tasks["t1"].clone();
        t.id = "t7".into();
        t.addr = "10.1.0.9/24".parse().expect("addr");
        n.tasks.insert("t7".into(), t);
    }));
    // A task that is not ready yet, then ready.
    let n1 = net1.clone();
    steps.push(Box::new(move |v| {
        let n = v.networks.get_mut(&n1).expect("net1");
        let mut t = n.tasks["t1"].clone();
        t.id = "t8".into();
        t.addr = "10.1.0.10/24".parse().expect("addr");
        t.ready = false;
        n.tasks.insert("t8".into(), t);
    }));
    let n1 = net1.clone();
    steps.push(Box::new(move |v| {
        let n = v.networks.get_mut(&n1).expect("net1");
        n.tasks.get_mut("t8").expect("t8").ready = true;
    }));
    let n1 = net1.clone();
    steps.push(Box::new(move |v| {
        let n = v.networks.get_mut(&n1).expect("net1");
        n.services.get_mut("websvcid00000").expect("web").vip =
            Some("10.1.0.20/24".parse().expect("vip"));
    }));
    let n1 = net1.clone();
    steps.push(Box::new(move |v| {
        let n = v.networks.get_mut(&n1).expect("net1");
        n.services.get_mut("websvcid00000").expect("web").mode = EndpointMode::Dnsrr;
    }));
    steps.push(Box::new(|v| {
        v.networks.remove("net2bbbbbbbbbbbb");
    }));
    let again = start.networks["net2bbbbbbbbbbbb"].clone();
    steps.push(Box::new(move |v| {
        v.networks
            .insert("net2bbbbbbbbbbbb".to_string(), again.clone());
    }));
    steps.push(Box::new(|v| {
        let n = v.networks.get_mut("ingress").expect("ingress");
        n.tasks.remove("t9");
    }));
    let mut tasks = ServiceTasks::of(&start);
    for (i, step) in steps.iter().enumerate() {
        let mut new = old.clone();
        step(&mut new);
        let before = cfg.clone();
        tasks.follow(&old, &new);
        let touched = update_node_config(&mut cfg, &tasks, &old, &new);
        assert_eq!(cfg, node_config(&new), "step {i}");
        // Every entry that differs is among those said to (what the eBPF plan visits).
        for key in before.services.keys().chain(cfg.services.keys()) {
            if before.services.get(key) != cfg.services.get(key) {
                assert!(touched.contains(key), "step {i}: {key:?} not reported");
            }
        }
        old = new;
    }
}

#[test]
fn a_task_that_is_not_ready_is_no_backend() {
    let mut v = view();
    let n = v.networks.get_mut("net1aaaaaaaaaaaa").expect("net1");
    n.tasks.get_mut("t2").expect("t2").ready = false;
    let cfg = node_config(&v);
    let web1 = &cfg.services[&("net1aaaaaaaaaaaa".to_string(), "websvcid00000".to_string())];
    let backends: Vec<String> = web1.backends.iter().map(|b| b.to_string()).collect();
    assert_eq!(backends, ["10.1.0.3"]);
    // The nftables fallback's config too.
    let lb = crate::zone::lb_for(&v, &["net1aaaaaaaaaaaa".to_string()]);
    let text = format!("{lb:?}");
    assert!(
        text.contains("10.1.0.3") && !text.contains("10.1.0.4"),
        "{text}"
    );
}

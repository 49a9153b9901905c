use super::*;
use crate::parse;

/// What docker 28's CLI sent for `docker service create --name vote --replicas 2 -p
/// 8080:80 --network overlay1 --env A=1 --stop-grace-period 10s --update-parallelism 2
/// --update-order start-first --constraint node.role==worker --mount
/// type=tmpfs,target=/cache --health-cmd true IMAGE vote --port 80` (captured from the
/// real CLI; the network name already resolved to its id).
const CLI_CREATE: &str = r#"{"Name":"vote","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"registry.example:5000/team/vote:1","Args":["vote","--port","80"],"Env":["A=1"],"Init":false,"Mounts":[{"Type":"tmpfs","Target":"/cache"}],"StopGracePeriod":10000000000,"Healthcheck":{"Test":["CMD-SHELL","true"]},"DNSConfig":{}},"Resources":{"Limits":{},"Reservations":{}},"Placement":{"Constraints":["node.role==worker"]},"Networks":[{"Target":"net123"}],"ForceUpdate":0},"Mode":{"Replicated":{"Replicas":2}},"UpdateConfig":{"Parallelism":2,"FailureAction":"pause","Monitor":5000000000,"MaxFailureRatio":0,"Order":"start-first"},"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8080,"PublishMode":"ingress"}]}}"#;

fn create(json: &str) -> Result<ServiceSpec, DockerError> {
    from_docker(parse(json.as_bytes())?, None)
}

#[test]
fn the_clis_create_request_becomes_shoals_spec() {
    let s = create(CLI_CREATE).unwrap();
    let c = &s.task_template.container_spec;
    assert_eq!(s.name, "vote");
    assert_eq!(c.runtime, Runtime::Oci);
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example:5000/team/vote:1")
    );
    // docker's Args are the image command's replacement; Command would be the entrypoint.
    assert_eq!(c.command, ["vote", "--port", "80"]);
    assert_eq!(c.entrypoint, None);
    assert_eq!(c.env, ["A=1"]);
    assert_eq!(c.stop_grace_period_ms, 10_000);
    assert_eq!(
        c.healthcheck.as_ref().map(|h| h.test.clone()),
        Some(vec!["CMD-SHELL".to_string(), "true".to_string()]),
        "the CLI spells it Healthcheck; it must not be dropped"
    );
    assert_eq!(c.mounts.len(), 1);
    assert_eq!(c.mounts[0].kind, MountType::Tmpfs);
    assert_eq!(s.mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(s.task_template.networks[0].target, "net123");
    assert_eq!(
        s.task_template.placement.constraints[0].to_string(),
        "node.role==worker"
    );
    assert_eq!(s.update_config.parallelism, 2);
    assert_eq!(s.update_config.order, UpdateOrder::StartFirst);
    assert_eq!(s.update_config.monitor_ms, 5_000);
    let p = &s.endpoint_spec.ports[0];
    assert_eq!((p.target_port, p.published_port), (80, Some(8080)));
    assert_eq!(p.publish_mode, PublishMode::Ingress);
}

#[test]
fn what_docker_shows_comes_back_as_it_was_with_what_docker_cannot_say() {
    let mut s = shoal_types::fixtures::spec("web", 3);
    // A host command, `traffic=local`, a DNS TTL and not-ready publishing have no docker
    // field: the CLI sends back what it read without them.
    s.endpoint_spec.ports =
        vec![PortConfig::parse("published=8080,target=80,traffic=local").unwrap()];
    s.endpoint_spec.dns_ttl = Some(5);
    s.endpoint_spec.publish_not_ready = true;
    assert!(s.task_template.container_spec.runtime.is_host());
    let json = serde_json::to_vec(&to_docker(&s)).unwrap();
    let back = from_docker(parse(&json).unwrap(), Some(&s)).unwrap();
    assert_eq!(back, s);

    // An image service round-trips with no current spec to lean on.
    let img = create(CLI_CREATE).unwrap();
    let json = serde_json::to_vec(&to_docker(&img)).unwrap();
    assert_eq!(from_docker(parse(&json).unwrap(), None).unwrap(), img);
}

#[test]
fn what_shoal_cannot_do_is_refused_by_name() {
    let with = |patch: &str| {
        let mut v: serde_json::Value = serde_json::from_str(CLI_CREATE).unwrap();
        let p: serde_json::Value = serde_json::from_str(patch).unwrap();
        merge(&mut v, p);
        create(&v.to_string()).unwrap_err().to_string()
    };
    assert_eq!(
        with(r#"{"TaskTemplate":{"ContainerSpec":{"Secrets":[{"SecretName":"db"}]}}}"#),
        "TaskTemplate.ContainerSpec.Secrets (--secret) is not supported by shoal"
    );
    assert_eq!(
        with(r#"{"TaskTemplate":{"ContainerSpec":{"TTY":true}}}"#),
        "TaskTemplate.ContainerSpec.TTY (--tty) is not supported by shoal"
    );
    assert_eq!(
        with(r#"{"Mode":{"ReplicatedJob":{"MaxConcurrent":1}}}"#),
        "Mode.ReplicatedJob (--mode replicated-job) is not supported by shoal"
    );
    assert_eq!(
        with(r#"{"EndpointSpec":{"Ports":[{"Protocol":"sctp","TargetPort":80}]}}"#),
        "the sctp protocol of a published port is not supported by shoal"
    );
    assert_eq!(
        with(r#"{"TaskTemplate":{"ContainerSpec":{"Colour":"red"}}}"#),
        "unknown field TaskTemplate.ContainerSpec.Colour in the request: shoal does not know it"
    );
    assert_eq!(
        with(r#"{"Name":""}"#),
        "a service needs a name: shoal does not make one up (docker service create --name NAME)"
    );
}

/// `patch`'s keys over `base`'s, recursively (objects only).
fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

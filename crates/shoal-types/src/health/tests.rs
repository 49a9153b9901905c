use super::*;
use crate::PortConfig;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn check(test: &[&str]) -> HealthConfig {
    HealthConfig {
        test: test.iter().map(|s| s.to_string()).collect(),
        ..HealthConfig::default()
    }
}

fn probe(retries: u64, start_period: Duration) -> Probe {
    Probe {
        command: vec!["true".into()],
        interval: secs(2),
        timeout: secs(1),
        start_period,
        start_interval: secs(1),
        retries,
    }
}

#[test]
fn defaults_are_dockers() {
    let p =
        HealthConfig::effective(Some(&check(&["CMD-SHELL", "curl -f localhost"])), None).unwrap();
    assert_eq!(p.command, ["/bin/sh", "-c", "curl -f localhost"]);
    assert_eq!(
        (p.interval, p.timeout, p.start_period, p.retries),
        (secs(30), secs(30), secs(0), 3)
    );
    let p = HealthConfig::effective(Some(&check(&["CMD", "wget", "-q", "x"])), None).unwrap();
    assert_eq!(p.command, ["wget", "-q", "x"]);
}

#[test]
fn the_image_fills_what_the_service_leaves_unset() {
    let image = HealthConfig {
        test: vec!["CMD".into(), "check".into()],
        interval: 5_000_000_000,
        retries: 7,
        ..HealthConfig::default()
    };
    // None from the service: the image's.
    let p = HealthConfig::effective(None, Some(&image)).unwrap();
    assert_eq!(
        (p.command.as_slice(), p.interval, p.retries),
        (&["check".to_string()][..], secs(5), 7)
    );
    // The service's interval only: the image's command, the service's interval.
    let svc = HealthConfig {
        interval: 1_000_000_000,
        ..HealthConfig::default()
    };
    let p = HealthConfig::effective(Some(&svc), Some(&image)).unwrap();
    assert_eq!(
        (p.command[0].as_str(), p.interval, p.retries),
        ("check", secs(1), 7)
    );
    // --no-healthcheck disables the image's.
    assert_eq!(
        HealthConfig::effective(Some(&HealthConfig::none()), Some(&image)),
        None
    );
    // The image's NONE, and no check anywhere.
    assert_eq!(
        HealthConfig::effective(None, Some(&HealthConfig::none())),
        None
    );
    assert_eq!(HealthConfig::effective(None, None), None);
    assert_eq!(
        HealthConfig::effective(Some(&HealthConfig::default()), None),
        None
    );
}

#[test]
fn validation_reads_as_dockers() {
    assert!(check(&["CMD-SHELL", "true"]).validate().is_ok());
    assert!(HealthConfig::none().validate().is_ok());
    assert!(check(&["CMD"]).validate().is_err());
    assert!(check(&["SHELL", "x"]).validate().is_err());
    let c = HealthConfig {
        interval: 10,
        ..check(&["CMD", "x"])
    };
    assert_eq!(
        c.validate().unwrap_err(),
        "Interval in Healthcheck cannot be less than 1ms"
    );
}

#[test]
fn docker_json_round_trips() {
    let json = r#"{"Test":["CMD-SHELL","true"],"Interval":1000000000,"Retries":2}"#;
    let c: HealthConfig = serde_json::from_str(json).unwrap();
    assert_eq!((c.interval, c.retries, c.timeout), (1_000_000_000, 2, 0));
    assert_eq!(serde_json::to_string(&c).unwrap(), json);
}

#[test]
fn retries_failures_in_a_row_make_it_unhealthy() {
    let mut m = HealthMonitor::new(probe(3, secs(0)));
    assert_eq!(m.status, Health::Starting);
    assert_eq!(m.record(secs(2), false), None);
    assert_eq!(m.record(secs(4), false), None);
    assert_eq!(m.record(secs(6), false), Some(Health::Unhealthy));
    assert_eq!(m.failing_streak, 3);
}

#[test]
fn a_success_makes_it_healthy_and_clears_the_streak() {
    let mut m = HealthMonitor::new(probe(2, secs(0)));
    assert_eq!(m.record(secs(2), true), Some(Health::Healthy));
    assert_eq!(m.record(secs(4), false), None);
    assert_eq!(m.status, Health::Healthy);
    assert_eq!(m.record(secs(6), true), None);
    assert_eq!(m.failing_streak, 0);
    assert_eq!(m.record(secs(8), false), None);
    assert_eq!(m.record(secs(10), false), Some(Health::Unhealthy));
}

#[test]
fn failures_in_the_start_period_do_not_count() {
    let mut m = HealthMonitor::new(probe(1, secs(10)));
    for t in [1, 3, 5, 9] {
        assert_eq!(m.record(secs(t), false), None, "at {t}s");
    }
    assert_eq!(m.failing_streak, 0);
    assert_eq!(m.status, Health::Starting);
    // The first failure after it counts.
    assert_eq!(m.record(secs(10), false), Some(Health::Unhealthy));
}

#[test]
fn once_healthy_the_start_period_no_longer_shields_failures() {
    let mut m = HealthMonitor::new(probe(1, secs(60)));
    assert_eq!(m.record(secs(1), true), Some(Health::Healthy));
    assert_eq!(m.record(secs(2), false), Some(Health::Unhealthy));
}

#[test]
fn probes_come_at_the_start_interval_only_while_starting_in_the_start_period() {
    let mut m = HealthMonitor::new(probe(3, secs(10)));
    assert_eq!(m.next_delay(secs(0)), secs(1));
    assert_eq!(m.next_delay(secs(10)), secs(2));
    m.record(secs(3), true);
    assert_eq!(m.next_delay(secs(4)), secs(2));
    // No start period: the interval from the start.
    let m = HealthMonitor::new(probe(3, secs(0)));
    assert_eq!(m.next_delay(secs(0)), secs(2));
}

#[test]
fn readiness_rules() {
    let port = |s: &str| PortConfig::parse(s).unwrap();
    assert_eq!(Readiness::of(true, &[port("8080:80")]), Readiness::Healthy);
    assert_eq!(
        Readiness::of(
            false,
            &[port("8080:80"), port("81"), port("9090:80"), port("53/udp")]
        ),
        Readiness::Listening(vec![80, 81])
    );
    assert_eq!(Readiness::of(false, &[port("53/udp")]), Readiness::Running);
    assert_eq!(Readiness::of(false, &[]), Readiness::Running);
}

#[test]
fn reports_of_a_running_task_only_move_forward() {
    use Health::*;
    let order = [progress(None, false), progress(None, true)];
    assert!(order[0] < order[1]);
    let order = [
        progress(Some(Starting), false),
        progress(Some(Healthy), true),
        progress(Some(Unhealthy), false),
    ];
    assert!(order[0] < order[1] && order[1] < order[2]);
    // An unhealthy task is never ready, whatever the report says.
    assert_eq!(
        progress(Some(Unhealthy), true),
        progress(Some(Unhealthy), false)
    );
}

#[test]
fn an_image_config_s_healthcheck_is_read_as_docker_writes_it() {
    let blob = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"],
        "Healthcheck":{"Test":["CMD-SHELL","wget -q -O- localhost"],"Interval":2000000000,"Retries":2}},
        "rootfs":{"type":"layers","diff_ids":[]}}"#;
    let h = from_image_config(blob).unwrap();
    assert_eq!(h.test, ["CMD-SHELL", "wget -q -O- localhost"]);
    assert_eq!((h.interval, h.retries), (2_000_000_000, 2));
    assert_eq!(from_image_config(br#"{"config":{"Cmd":["sh"]}}"#), None);
    assert_eq!(from_image_config(b"not json"), None);
}

//! Swarm membership: `init`, `join`, `join-token`, `leave`, printed as `docker swarm` does.

use anyhow::{Result, bail};
use clap::Args;
use shoal_api::{Client, InitRequest, InitResponse, JoinRequest};
use shoal_types::NodeRole;
use shoal_types::network::parse_subnet;

/// The port managers listen on for joining nodes when `HOST:PORT` leaves it out.
const CLUSTER_PORT: u16 = 2377;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Address other nodes reach this node at (an IP, or IP:PORT).
    #[arg(long, value_name = "IP")]
    pub advertise_addr: Option<String>,
    /// Address the cluster listener binds (IP:PORT).
    #[arg(long, value_name = "ADDR")]
    pub listen_addr: Option<String>,
    /// Subnet of the ingress network (the routing mesh), e.g. 10.0.0.0/24 (default: the
    /// daemon's choice, which it prints).
    #[arg(long, value_name = "CIDR")]
    pub ingress_subnet: Option<String>,
    /// How often agents send heartbeats, e.g. 5s (docker's `--dispatcher-heartbeat`;
    /// default: the daemon's `--heartbeat-period`, 5s unless set).
    #[arg(long, value_name = "DURATION")]
    pub dispatcher_heartbeat: Option<String>,
    /// Heartbeat periods a node may miss before it is marked Down (default 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub heartbeat_grace: Option<u32>,
    /// How long node certificates are valid, e.g. 2160h (docker's `--cert-expiry`, 90 days
    /// by default); nodes renew theirs on their own well before.
    #[arg(long, value_name = "DURATION")]
    pub cert_expiry: Option<String>,
    /// Use this root CA certificate (PEM) instead of making one; with --ca-key.
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// The root CA's private key (PKCS#8 PEM); with --ca-cert. It is kept on the managers.
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    pub ca_key: Option<std::path::PathBuf>,
    /// On a manager that lost its quorum (most managers gone for good): make it the only
    /// manager of a new cluster with the state it has. The other managers are removed and
    /// refused; they leave (`shoal leave --force`) and join again.
    #[arg(long, conflicts_with_all = ["ingress_subnet", "dispatcher_heartbeat", "heartbeat_grace", "cert_expiry", "ca_cert", "ca_key"])]
    pub force_new_cluster: bool,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The token from `shoal join-token worker|manager` on a manager.
    #[arg(long)]
    pub token: String,
    /// Address other nodes reach this node at.
    #[arg(long, value_name = "IP")]
    pub advertise_addr: Option<String>,
    /// A manager's address (HOST:PORT; the port defaults to 2377).
    #[arg(value_name = "HOST:PORT")]
    pub remote: String,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Only print the token.
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace the role's token: the old one stops working at once (nodes already in the
    /// cluster are not affected).
    #[arg(long)]
    pub rotate: bool,
    /// worker or manager.
    #[arg(value_parser = parse_role)]
    pub role: NodeRole,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Leave even if this is a manager (the swarm may lose its quorum).
    #[arg(short, long)]
    pub force: bool,
}

fn parse_role(s: &str) -> Result<NodeRole, String> {
    s.parse()
        .map_err(|_| format!("invalid role {s:?}: expected worker or manager"))
}

/// The request `shoal init` sends; a malformed `--ingress-subnet` is caught here.
/// The text of the file a flag names (a PEM certificate or key), if the flag was given.
pub(crate) fn read_flag_file(
    flag: &str,
    path: &Option<std::path::PathBuf>,
) -> Result<Option<String>> {
    path.as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {flag} {}: {e}", p.display()))
        })
        .transpose()
}

pub fn init_request(args: InitArgs) -> Result<InitRequest> {
    if let Some(s) = &args.ingress_subnet {
        parse_subnet(s).map_err(|e| anyhow::anyhow!("invalid --ingress-subnet: {e}"))?;
    }
    let heartbeat = match &args.dispatcher_heartbeat {
        Some(d) => {
            let ms = shoal_types::time::parse_duration_ms(d)
                .map_err(|e| anyhow::anyhow!("invalid --dispatcher-heartbeat: {e}"))?;
            if ms < 100 {
                bail!("invalid --dispatcher-heartbeat {d:?}: use at least 100ms");
            }
            Some(ms)
        }
        None => None,
    };
    let cert_expiry_ms = match &args.cert_expiry {
        Some(d) => Some(
            shoal_types::time::parse_duration_ms(d)
                .map_err(|e| anyhow::anyhow!("invalid --cert-expiry: {e}"))?,
        ),
        None => None,
    };
    Ok(InitRequest {
        ca_cert: read_flag_file("--ca-cert", &args.ca_cert)?,
        ca_key: read_flag_file("--ca-key", &args.ca_key)?,
        cert_expiry_ms,
        advertise_addr: args.advertise_addr,
        listen_addr: args.listen_addr,
        heartbeat_period_ms: heartbeat,
        heartbeat_grace: args.heartbeat_grace,
        ingress_subnet: args.ingress_subnet,
        force_new_cluster: args.force_new_cluster,
    })
}

pub async fn init(client: &Client, args: InitArgs) -> Result<()> {
    let req = init_request(args)?;
    let resp = client.init(&req).await?;
    print!("{}", init_message(&resp));
    Ok(())
}

/// docker's text, then each of the daemon's notes on a line of its own.
fn init_message(resp: &InitResponse) -> String {
    let InitResponse {
        node_id,
        worker_token,
        manager_addr,
        ..
    } = resp;
    let mut out = format!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\n\
         To add a worker to this swarm, run the following command:\n\n    \
         shoal join --token {worker_token} {manager_addr}\n\n\
         To add a manager to this swarm, run 'shoal join-token manager' and follow the instructions.\n\n"
    );
    for note in &resp.notes {
        out.push_str(note.trim_end());
        out.push('\n');
    }
    out
}

pub async fn join(client: &Client, args: JoinArgs) -> Result<()> {
    validate_token(&args.token)?;
    let remote_addr = with_default_port(&args.remote)?;
    let req = JoinRequest {
        token: args.token,
        remote_addr,
        advertise_addr: args.advertise_addr,
    };
    let resp = client.join(&req).await?;
    println!("This node joined a swarm as a {}.", resp.role);
    Ok(())
}

pub async fn join_token(client: &Client, args: JoinTokenArgs) -> Result<()> {
    let t = if args.rotate {
        let t = client.rotate_join_token(args.role).await?;
        if !args.quiet {
            println!("Successfully rotated {} join token.\n", args.role);
        }
        t
    } else {
        client.join_token(args.role).await?
    };
    if args.quiet {
        println!("{}", t.token);
    } else {
        println!(
            "To add a {} to this swarm, run the following command:\n\n    shoal join --token {} {}\n",
            args.role, t.token, t.manager_addr
        );
    }
    Ok(())
}

pub async fn leave(client: &Client, args: LeaveArgs) -> Result<()> {
    client.leave(args.force).await?;
    println!("Node left the swarm.");
    Ok(())
}

/// Checks a join token's shape before asking the manager (`SWMTKN-1-<CA digest>-<secret>`).
/// Whether it is a worker or manager token only the manager knows (from the secret).
pub fn validate_token(token: &str) -> Result<()> {
    shoal_pki::JoinToken::parse(token)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `10.0.0.1` -> `10.0.0.1:2377`; `[::1]` -> `[::1]:2377`; a port given is checked.
fn with_default_port(remote: &str) -> Result<String> {
    let has_port = match remote.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            if port.parse::<u16>().is_err() {
                bail!(
                    "invalid manager address {remote:?}: expected HOST:PORT, e.g. 10.0.0.1:{CLUSTER_PORT}"
                );
            }
            true
        }
        _ => false,
    };
    if remote.is_empty() {
        bail!("a manager address is required: shoal join --token TOKEN HOST:PORT");
    }
    Ok(if has_port {
        remote.to_string()
    } else {
        format!("{remote}:{CLUSTER_PORT}")
    })
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn tokens() {
        let good = shoal_pki::JoinToken::random(shoal_pki::CaDigest::of(b"ca")).to_string();
        assert!(validate_token(&good).is_ok());
        let err = |t: &str| validate_token(t).unwrap_err().to_string();
        assert_eq!(
            err("SHTKN-1-abc"),
            "invalid join token: it starts with \"SHTKN\", not \"SWMTKN\"; expected \
             SWMTKN-1-<50 base36 characters>-<25 base36 characters>: run `shoal join-token \
             worker` on a manager to print a valid one"
        );
        assert!(err("SWMTKN-1-abc").contains("it has 3 parts separated by '-', not 4"));
        assert!(
            err(&good.replace("SWMTKN-1-", "SWMTKN-2-")).contains("version \"2\" is not supported")
        );
        assert!(
            err(&good[..good.len() - 1]).contains("secret"),
            "{}",
            err(&good[..good.len() - 1])
        );
    }

    #[test]
    fn remote_addresses() {
        assert_eq!(with_default_port("10.0.0.1").unwrap(), "10.0.0.1:2377");
        assert_eq!(with_default_port("10.0.0.1:4000").unwrap(), "10.0.0.1:4000");
        assert_eq!(with_default_port("[::1]:4000").unwrap(), "[::1]:4000");
        assert_eq!(with_default_port("node1").unwrap(), "node1:2377");
        assert!(with_default_port("10.0.0.1:x").is_err());
    }

    fn response(notes: &[&str]) -> InitResponse {
        InitResponse {
            node_id: "n1".into(),
            worker_token: "TKN".into(),
            manager_token: "MTKN".into(),
            manager_addr: "10.0.0.1:2377".into(),
            ingress_subnet: "10.0.0.0/24".into(),
            notes: notes.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn init_args(args: &[&str]) -> InitArgs {
        use clap::Parser;
        let argv = ["shoal", "init"].iter().chain(args);
        match crate::Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(crate::Command::Init(a)) => a,
            Ok(other) => panic!("parsed as {other:?}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ingress_subnet_flag() {
        let req = init_request(init_args(&["--ingress-subnet", "10.9.0.0/16"])).unwrap();
        assert_eq!(req.ingress_subnet.as_deref(), Some("10.9.0.0/16"));
        assert_eq!(
            init_request(init_args(&[])).unwrap(),
            InitRequest::default()
        );
        let err = init_request(init_args(&["--ingress-subnet", "10.9.0.1/16"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid --ingress-subnet: invalid subnet 10.9.0.1/16: host bits"),
            "{err}"
        );
    }

    #[test]
    fn init_prints_the_daemons_notes() {
        expect![[r#"
            Swarm initialized: current node (n1) is now a manager.

            To add a worker to this swarm, run the following command:

                shoal join --token TKN 10.0.0.1:2377

            To add a manager to this swarm, run 'shoal join-token manager' and follow the instructions.

            Ingress network: 10.0.0.0/24 (10.255.0.0/16 overlaps a route of this host).
            Pass --ingress-subnet to choose another.
        "#]]
        .assert_eq(&init_message(&response(&[
            "Ingress network: 10.0.0.0/24 (10.255.0.0/16 overlaps a route of this host).",
            "Pass --ingress-subnet to choose another.\n",
        ])));
    }

    #[test]
    fn init_prints_like_docker() {
        expect![[r#"
            Swarm initialized: current node (n1) is now a manager.

            To add a worker to this swarm, run the following command:

                shoal join --token TKN 10.0.0.1:2377

            To add a manager to this swarm, run 'shoal join-token manager' and follow the instructions.

        "#]]
        .assert_eq(&init_message(&response(&[])));
    }
}

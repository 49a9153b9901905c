//! The lab's network: a namespace holding bridge `br0`, one namespace per node joined to it
//! by a veth (`eth0` in the node, `v<i>` on the bridge), `lo` up everywhere, no route out.

use shoal_net::Netlink;

use crate::error::LabError;
use crate::state::LabInfo;

/// The bridge in the lab's namespace.
pub(crate) const BRIDGE: &str = "br0";

/// The node end of each node's veth.
pub(crate) const NODE_LINK: &str = "eth0";

fn create_netns(name: &str) -> Result<(), LabError> {
    shoal_net::create_netns(name).map_err(|e| LabError::net(format!("create namespace {name}"), e))
}

async fn netlink(netns: &str) -> Result<Netlink, LabError> {
    Netlink::in_netns(netns)
        .await
        .map_err(|e| LabError::net(format!("open netlink in {netns}"), e))
}

fn ctx(what: &str) -> impl FnOnce(shoal_net::NetError) -> LabError + '_ {
    move |e| LabError::net(what, e)
}

/// Builds the lab's namespaces and links. Leaves partial work for `down` on failure.
pub(crate) async fn build(lab: &LabInfo) -> Result<(), LabError> {
    create_netns(&lab.bridge_netns)?;
    let hub = netlink(&lab.bridge_netns).await?;
    hub.set_lo_up()
        .await
        .map_err(ctx("set lo up in the lab namespace"))?;
    hub.create_bridge(BRIDGE)
        .await
        .map_err(ctx("create the lab bridge"))?;

    for node in &lab.nodes {
        let what = |step: &str| format!("{step} for {}", node.name);
        create_netns(&node.netns)?;
        let nl = netlink(&node.netns).await?;
        nl.set_lo_up().await.map_err(ctx(&what("set lo up")))?;
        // Both ends are made in the node; the bridge end moves to the lab namespace.
        let port = format!("v{}", node.index);
        nl.create_veth(NODE_LINK, &port)
            .await
            .map_err(ctx(&what("create the veth")))?;
        nl.move_to_netns(&port, &lab.bridge_netns)
            .await
            .map_err(ctx(&what("move the veth to the lab namespace")))?;
        hub.set_controller(&port, BRIDGE)
            .await
            .map_err(ctx(&what("attach the veth to the bridge")))?;
        hub.set_up(&port)
            .await
            .map_err(ctx(&what("set the bridge port up")))?;
        nl.add_address(NODE_LINK, node.addr, 24)
            .await
            .map_err(ctx(&what("address the node")))?;
        nl.set_up(NODE_LINK)
            .await
            .map_err(ctx(&what("set eth0 up")))?;
    }
    Ok(())
}

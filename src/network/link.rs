//! Links, addresses and routes over netlink (rtnetlink). Each call runs on a thread of its
//! own with a current-thread tokio runtime; a call for a pod enters the pod's network
//! namespace first (`setns` moves only that thread, and a netlink socket belongs to the
//! namespace of the thread that opens it), so the supervisor's threads never change
//! namespace.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{NetworkError, Subnet};

/// The errno of a netlink error, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn failed(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |e| NetworkError::Netlink {
        message: match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        },
        what,
    }
}

/// Runs `f` with a netlink handle on a new thread, in the network namespace pinned at
/// `netns` when given (else the caller's, the host's).
fn with_handle<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T, NetworkError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    let io_err = |what: String| move |source: io::Error| NetworkError::Io { what, source };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netlink".into())
            .stack_size(256 * 1024)
            .spawn_scoped(scope, move || {
                if let Some(pin) = netns {
                    super::enter_netns(pin)?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(io_err("start a netlink runtime".into()))?;
                rt.block_on(async move {
                    let (connection, handle, _) = rtnetlink::new_connection()
                        .map_err(io_err("open a netlink socket".into()))?;
                    let conn = tokio::spawn(connection);
                    let out = f(handle).await;
                    conn.abort();
                    out
                })
            })
            .map_err(io_err("start a netlink thread".into()))?
            .join()
            .unwrap_or_else(|_| {
                Err(NetworkError::Io {
                    what: "run a netlink request".into(),
                    source: io::Error::other("the netlink thread panicked"),
                })
            })
    })
}

/// The index of link `name`, if it exists.
async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(failed(format!("look up link `{name}`"))(e)),
    }
}

/// Creates bridge `name` (up) with `gateway/prefix` of `subnet`, or finds it (a re-`up`);
/// returns its index.
///
/// Its MAC is set, to [`super::mac_of`] the gateway: a bridge whose MAC was never set takes
/// the lowest of its ports' (random) MACs, so that it changes when a replica's veth leaves,
/// and the replicas' neighbour entries for the gateway then name a MAC nobody has: their
/// answers to the balancer were lost until the entries expired (a request hung 15 s when
/// sent just as a replica was scaled away).
///
/// # Errors
///
/// A netlink request failed.
pub fn create_bridge(name: &str, subnet: Subnet, gateway: Ipv4Addr) -> Result<u32, NetworkError> {
    with_handle(None, |handle| async move {
        let made = handle
            .link()
            .add(
                LinkBridge::new(name)
                    .address(super::mac_of(gateway).to_vec())
                    .up()
                    .build(),
            )
            .execute()
            .await;
        let existed = match made {
            Ok(()) => false,
            Err(e) if errno(&e) == Some(libc::EEXIST) => true,
            Err(e) => return Err(failed(format!("create bridge `{name}`"))(e)),
        };
        let index = index_of(&handle, name)
            .await?
            .ok_or_else(|| NetworkError::Netlink {
                what: format!("create bridge `{name}`"),
                message: "it vanished after its creation".into(),
            })?;
        if existed {
            // made by an earlier `up`, perhaps of a version that left its MAC unset
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .address(super::mac_of(gateway).to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(failed(format!("set the MAC of bridge `{name}`")))?;
        }
        add_address_at(&handle, index, gateway, subnet.prefix(), name).await?;
        Ok(index)
    })
}

async fn add_address_at(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
    link: &str,
) -> Result<(), NetworkError> {
    match handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(failed(format!("add address {ip}/{prefix} to `{link}`"))(e)),
    }
}

/// Adds `ip/32` to link `name` (a service's virtual address on the bridge); present is fine.
///
/// # Errors
///
/// The link is missing or the request failed.
pub fn add_address(name: &str, ip: Ipv4Addr) -> Result<(), NetworkError> {
    with_handle(None, |handle| async move {
        let index = index_of(&handle, name)
            .await?
            .ok_or_else(|| NetworkError::Netlink {
                what: format!("add address {ip} to `{name}`"),
                message: "no such link".into(),
            })?;
        add_address_at(&handle, index, ip, 32, name).await
    })
}

/// Removes address `ip` from link `name`; a missing link or address is fine.
///
/// # Errors
///
/// The request failed.
pub fn delete_address(name: &str, ip: Ipv4Addr) -> Result<(), NetworkError> {
    with_handle(None, |handle| async move {
        let Some(index) = index_of(&handle, name).await? else {
            return Ok(());
        };
        let mut found = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(ip))
            .execute();
        while let Some(msg) = found
            .try_next()
            .await
            .map_err(failed(format!("list the addresses of `{name}`")))?
        {
            match handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(failed(format!("remove address {ip} from `{name}`"))(e)),
            }
        }
        Ok(())
    })
}

/// Deletes link `name`; a missing one is fine.
///
/// # Errors
///
/// The request failed.
pub fn delete_link(name: &str) -> Result<(), NetworkError> {
    with_handle(None, |handle| async move {
        let Some(index) = index_of(&handle, name).await? else {
            return Ok(());
        };
        match handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(failed(format!("delete link `{name}`"))(e)),
        }
    })
}

/// Whether link `name` exists (without netlink: its sysfs directory).
#[must_use]
pub fn exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Wires the pod replica whose network namespace is pinned at `netns` to `bridge`: a veth
/// pair, `veth` on the host (in the bridge, up) and `eth0` made directly inside the
/// namespace (moving a link between namespaces costs 12-20 ms here), with `ip` of `subnet`,
/// up, and a default route through `gateway`. `lo` is already up.
///
/// # Errors
///
/// A request failed; the caller removes the namespace, which takes the pair with it.
pub fn attach(
    netns: &Path,
    bridge: &str,
    veth: &str,
    ip: Ipv4Addr,
    subnet: Subnet,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    let ns = File::open(netns).map_err(|source| NetworkError::Io {
        what: format!("open the network namespace `{}`", netns.display()),
        source,
    })?;
    let fd = ns.as_raw_fd();
    with_handle(None, |handle| async move {
        let bridge_index =
            index_of(&handle, bridge)
                .await?
                .ok_or_else(|| NetworkError::Netlink {
                    what: format!("attach `{veth}` to bridge `{bridge}`"),
                    message: "the bridge does not exist".into(),
                })?;
        let peer = LinkUnspec::new_with_name("eth0")
            .setns_by_fd(fd)
            .address(super::mac_of(ip).to_vec())
            .build();
        let message = LinkVeth::new(veth, "eth0")
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(bridge_index)
            .up()
            .build();
        handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(failed(format!("create veth `{veth}` in bridge `{bridge}`")))
    })?;
    drop(ns);
    with_handle(Some(netns), |handle| async move {
        let index = index_of(&handle, "eth0")
            .await?
            .ok_or_else(|| NetworkError::Netlink {
                what: "configure eth0".into(),
                message: "eth0 is not in the pod's namespace".into(),
            })?;
        add_address_at(&handle, index, ip, subnet.prefix(), "eth0").await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(failed("bring eth0 up"))?;
        handle
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .build(),
            )
            .execute()
            .await
            .map_err(failed(format!("add the default route via {gateway}")))
    })
}

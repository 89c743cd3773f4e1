//! The project network: a bridge per project, an address per pod replica, names in
//! /etc/hosts, a default route through the bridge; subnets that never clash.

use std::path::Path;

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, project, ps_rows, rcompose, require,
    run_ok, stderr, stdout,
};

const STACK: &str = r#"
pods:
  web:
    replicas: 2
    labels: { app: web }
    containers:
      - name: web
        command: [ python3, -m, http.server, --bind, 0.0.0.0, "8000" ]
        readiness: { tcp: { port: 8000 } }
  client:
    containers: [ { name: c, command: [ sleep, "1000" ] } ]
  alone:
    network_mode: none
    containers: [ { name: a, command: [ sleep, "1000" ] } ]
services:
  web: { selector: { app: web }, ports: [ 80 ] }
"#;

fn exec(dir: &Path, p: &str, pod: &str, script: &str) -> String {
    let out = rcompose(dir, &["-p", p, "exec", pod, "--", "python3", "-c", script]);
    assert_code(&out, 0);
    stdout(&out)
}

/// The address of every replica, from `ps --format json`.
fn addresses(dir: &Path, p: &str) -> Vec<(String, Option<String>)> {
    let rows = ps_rows(dir, p);
    rows.iter()
        .map(|r| {
            (
                format!("{}-{}", r["pod"].as_str().unwrap(), r["replica"]),
                r["ip"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn replicas_reach_each_other_by_name_and_the_host_through_the_bridge() {
    require(&[Need::Root, Need::Tool("python3")]);
    let dir = TempDir::new("net-basic");
    let p = project("net-basic");
    dir.write("rcompose.yaml", STACK);
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    assert_code(&rcompose(d, &["-p", &p, "up", "-d", "--wait"]), 0);

    let ips = addresses(d, &p);
    let ip_of = |name: &str| {
        ips.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, ip)| ip.clone())
            .unwrap_or_else(|| panic!("no address for {name}: {ips:?}"))
    };
    let (web1, web2, client) = (ip_of("web-1"), ip_of("web-2"), ip_of("client-1"));
    assert!(ips.iter().any(|(n, ip)| n == "alone-1" && ip.is_none()));
    let subnet = web1.rsplit_once('.').unwrap().0.to_string();
    assert!(
        web2.starts_with(&subnet) && client.starts_with(&subnet),
        "{ips:?}"
    );

    // names: replicas, the pod name (its first replica) and the service's virtual address
    let names = exec(
        d,
        &p,
        "client",
        "import socket\nfor n in ['web-1', 'web-2', 'client', 'web']: print(socket.gethostbyname(n))",
    );
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names[..3], [web1.as_str(), web2.as_str(), client.as_str()]);
    assert!(
        names[3].starts_with(&subnet) && !names[..3].contains(&names[3]),
        "{names:?}"
    );

    // the replica's MAC is made from its address (a replica back with the address has it)
    let mac = exec(
        d,
        &p,
        "client",
        "print(open('/sys/class/net/eth0/address').read().strip())",
    );
    let want: Vec<String> = client
        .split('.')
        .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
        .collect();
    assert_eq!(mac.trim(), format!("02:72:{}", want.join(":")));

    // HTTP from one pod to each replica, over the bridge
    let got = exec(
        d,
        &p,
        "client",
        "import urllib.request\nfor n in ['web-1', 'web-2']: print(urllib.request.urlopen(f'http://{n}:8000/', timeout=5).status)",
    );
    assert_eq!(got, "200\n200\n");

    // the host is the gateway: the route says so, and the host answers there (refused: no
    // listener on port 1, which proves the packet arrived)
    let gateway = format!("{subnet}.1");
    let route = exec(d, &p, "client", "print(open('/proc/net/route').read())");
    assert!(route.contains("eth0\t00000000\t"), "{route}");
    let reached = exec(
        d,
        &p,
        "client",
        &format!(
            "import socket\ns = socket.socket()\ns.settimeout(3)\nprint(s.connect_ex(('{gateway}', 1)))"
        ),
    );
    assert_eq!(reached.trim(), "111", "connect to the gateway: {reached}");
    // the bridge's MAC is made from the gateway's address too, and set: it never changes
    // as replicas' veths join and leave (an unset one follows the lowest port MAC, and the
    // replicas' neighbour entries for the gateway would go stale: answers lost)
    let bridge_mac = || {
        std::fs::read_to_string(format!(
            "/sys/class/net/{}/address",
            rcompose::network::bridge_name(&p)
        ))
        .unwrap()
        .trim()
        .to_string()
    };
    let gateway_mac = {
        let octets: Vec<String> = gateway
            .split('.')
            .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
            .collect();
        format!("02:72:{}", octets.join(":"))
    };
    assert_eq!(bridge_mac(), gateway_mac);
    let arp = exec(d, &p, "client", "print(open('/proc/net/arp').read())");
    assert!(
        arp.lines()
            .any(|l| l.starts_with(&format!("{gateway} ")) && l.contains(&gateway_mac)),
        "{arp}"
    );
    // the resolver file has no loopback nameserver; a pod without the network has only lo
    let resolv = exec(d, &p, "client", "print(open('/etc/resolv.conf').read())");
    assert!(!resolv.contains("nameserver 127."), "{resolv}");
    let links = exec(
        d,
        &p,
        "alone",
        "import os\nprint(sorted(os.listdir('/sys/class/net')))",
    );
    assert_eq!(links.trim(), "['lo']");

    // a scaled pod's new replica is in every pod's /etc/hosts at once
    assert_code(&rcompose(d, &["-p", &p, "scale", "web=3"]), 0);
    let hosts = exec(d, &p, "client", "print(open('/etc/hosts').read())");
    assert!(hosts.contains("\tweb-3\n"), "{hosts}");
    assert_code(&rcompose(d, &["-p", &p, "scale", "web=1"]), 0);
    assert_eq!(bridge_mac(), gateway_mac);
    let hosts = exec(d, &p, "client", "print(open('/etc/hosts').read())");
    assert!(
        !hosts.contains("web-2") && !hosts.contains("web-3"),
        "{hosts}"
    );

    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
}

#[test]
fn two_projects_of_one_manifest_get_their_own_subnets_and_names() {
    require(&[Need::Root, Need::Tool("python3")]);
    let dir = TempDir::new("net-two");
    let (a, b) = (project("net-two-a"), project("net-two-b"));
    dir.write("rcompose.yaml", STACK);
    let _guards = (Cleanup(a.clone()), Cleanup(b.clone()));
    let d = dir.path();
    // both at once: the subnet choice is serialized by a lock
    let ups: Vec<_> = [&a, &b]
        .map(|p| {
            std::process::Command::new(crate::test::bin())
                .args(["-p", p, "up", "-d", "--wait"])
                .current_dir(d)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .into_iter()
        .collect();
    for up in ups {
        let out = up.wait_with_output().unwrap();
        assert_code(&out, 0);
    }
    let subnet = |p: &str| {
        let ips = addresses(d, p);
        let ip = ips[0].1.clone().or_else(|| ips[1].1.clone()).unwrap();
        ip.rsplit_once('.').unwrap().0.to_string()
    };
    assert_ne!(subnet(&a), subnet(&b));
    for p in [&a, &b] {
        let got = exec(
            d,
            p,
            "client",
            "import urllib.request\nprint(urllib.request.urlopen('http://web-2:8000/', timeout=5).status)",
        );
        assert_eq!(got, "200\n");
    }
    for p in [&a, &b] {
        assert_code(&rcompose(d, &["-p", p, "down", "-t", "1"]), 0);
        assert_no_trace(p);
    }
}

#[test]
fn a_subnet_in_use_is_refused_with_its_location_before_anything_starts() {
    require(&[Need::Root]);
    let dir = TempDir::new("net-clash");
    let (a, b) = (project("net-clash-a"), project("net-clash-b"));
    let _guards = (Cleanup(a.clone()), Cleanup(b.clone()));
    let d = dir.path();
    let stack = |subnet: &str| {
        format!(
            "network: {{ subnet: {subnet} }}\npods:\n  s:\n    containers: [ {{ name: s, command: [ sleep, \"1000\" ] }} ]\n"
        )
    };
    dir.write("a.yaml", &stack("10.93.7.0/24"));
    dir.write("b.yaml", &stack("10.93.7.128/25"));
    assert_code(&rcompose(d, &["-f", "a.yaml", "-p", &a, "up", "-d"]), 0);
    let ip = addresses(d, &a)[0].1.clone().unwrap();
    assert_eq!(ip, "10.93.7.2");
    let out = rcompose(d, &["-f", "b.yaml", "-p", &b, "up", "-d"]);
    assert_code(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains("subnet `10.93.7.128/25` overlaps the network of another rcompose project (route 10.93.7.0/24 dev rc")
            && err.contains("b.yaml:1:20"),
        "{err}"
    );
    assert_no_trace(&b);
    // the project's own network does not count against it: `up` again applies
    let out = rcompose(d, &["-f", "a.yaml", "-p", &a, "up", "-d"]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("up to date"), "{}", stderr(&out));
    assert_code(&rcompose(d, &["-p", &a, "down", "-t", "1"]), 0);
    assert_no_trace(&a);
}

/// A network namespace standing for a machine beyond this host: `198.18.N.2/24`, linked to
/// the host (`198.18.N.1`) by a veth, with no route back to the pods' subnets. Removed on
/// drop.
struct Beyond {
    ns: String,
    veth: String,
}

impl Drop for Beyond {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.veth])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn ip(args: &[&str]) {
    run_ok("ip", args);
}

#[test]
fn pods_reach_beyond_the_host_through_masquerading_and_it_goes_with_the_project() {
    require(&[
        Need::Root,
        Need::Tool("python3"),
        Need::Tool("ip"),
        Need::Tool("nft"),
    ]);
    let dir = TempDir::new("net-nat");
    let p = project("net-nat");
    let n = std::process::id() % 200 + 20;
    let beyond = Beyond {
        ns: format!("rct-beyond-{}", std::process::id()),
        veth: format!("rctb{}", std::process::id() % 100_000),
    };
    let (host_ip, far_ip) = (format!("198.18.{n}.1"), format!("198.18.{n}.2"));
    ip(&["netns", "add", &beyond.ns]);
    ip(&[
        "link",
        "add",
        &beyond.veth,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &beyond.ns,
    ]);
    ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &beyond.veth]);
    ip(&["link", "set", &beyond.veth, "up"]);
    ip(&[
        "-n",
        &beyond.ns,
        "addr",
        "add",
        &format!("{far_ip}/24"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", &beyond.ns, "link", "set", "eth0", "up"]);
    ip(&["-n", &beyond.ns, "link", "set", "lo", "up"]);
    // a TCP server there that answers with the address it sees the client at
    let server = std::process::Command::new("ip")
        .args([
            "netns", "exec", &beyond.ns, "python3", "-c",
            &format!("import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('{far_ip}', 8080))\ns.listen()\nwhile True:\n    c, a = s.accept()\n    c.sendall(a[0].encode())\n    c.close()"),
        ])
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    dir.write(
        "rcompose.yaml",
        "pods:\n  c:\n    containers: [ { name: c, command: [ sleep, \"1000\" ] } ]\n",
    );
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    assert_code(&rcompose(d, &["-p", &p, "up", "-d"]), 0);
    let script = format!(
        "import socket, time\nfor i in range(50):\n    try:\n        s = socket.create_connection(('{far_ip}', 8080), timeout=2)\n        print(s.recv(64).decode())\n        break\n    except OSError:\n        time.sleep(0.1)"
    );
    // the far side sees the host's address, not the pod's: masqueraded
    assert_eq!(exec(d, &p, "c", &script).trim(), host_ip);
    let bridge = rcompose::network::bridge_name(&p);
    assert!(rcompose::network::nat::exists(&bridge));
    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert!(
        !rcompose::network::nat::exists(&bridge),
        "the masquerade table is left"
    );
    assert_no_trace(&p);
}

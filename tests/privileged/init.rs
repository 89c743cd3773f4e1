//! Init containers in real pods: they run to completion, one after the other, before the
//! pod's containers start (and before pods that depend on the pod start); a failure stops
//! the stack with the reason, and the pod's restart policy retries a failed one.

use std::fs;

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, project, rcompose, require, stderr,
    stdout,
};

/// Each container appends `<replica>/<name>` to ./trace (a bind mount) as it starts.
const ORDERED: &str = r#"
pods:
  api:
    replicas: 2
    volumes: { shared: { empty_dir: {} } }
    init_containers:
      - name: migrate
        volumes: [ "./trace:/trace", "shared:/shared" ]
        command: [ sh, -c, 'sleep 0.2; echo $(hostname)/migrate >> /trace; echo schema > /shared/db' ]
      - name: seed
        volumes: [ "./trace:/trace", "shared:/shared" ]
        command: [ sh, -c, 'echo $(hostname)/seed >> /trace; echo rows >> /shared/db' ]
    containers:
      - name: server
        volumes: [ "./trace:/trace", "shared:/shared:ro" ]
        command: [ sh, -c, 'echo $(hostname)/server >> /trace; echo "db=$(cat /shared/db | tr "\n" ,)"' ]
  client:
    depends_on: [ api ]
    containers:
      - name: client
        volumes: [ "./trace:/trace" ]
        command: [ sh, -c, 'echo client >> /trace' ]
"#;

#[test]
fn init_containers_run_in_order_before_the_pod_and_its_dependents() {
    require(&[Need::Root]);
    let dir = TempDir::new("init-order");
    let p = project("init-order");
    dir.write("rcompose.yaml", ORDERED);
    dir.write("trace", "");
    let _guard = Cleanup(p.clone());

    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    let trace = fs::read_to_string(dir.path().join("trace")).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("`{line}` missing from the trace:\n{trace}"))
    };
    for r in ["api-1", "api-2"] {
        assert!(
            at(&format!("{r}/migrate")) < at(&format!("{r}/seed")),
            "{trace}"
        );
        assert!(
            at(&format!("{r}/seed")) < at(&format!("{r}/server")),
            "{trace}"
        );
        // `client` depends on `api` (started): on its containers, not its init containers,
        // so it starts after every init container of `api` finished. Not necessarily after
        // the servers' lines: started means their `execve` succeeded, and a server's shell
        // may write later than the client's (seen under CPU load once starts got faster)
        assert!(at(&format!("{r}/seed")) < at("client"), "{trace}");
    }
    assert_eq!(lines.len(), 7, "{trace}");
    // the init containers' writes to the replica's empty_dir are there for the server
    let text = stdout(&out);
    for r in ["api-1", "api-2"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{r}/server ")) && l.ends_with("| db=schema,rows,")),
            "{text}"
        );
    }
    let err = stderr(&out);
    assert!(err.contains("api-1/migrate: exited with code 0"), "{err}");
    assert_no_trace(&p);
}

#[test]
fn a_failed_init_container_stops_the_stack_with_the_reason() {
    require(&[Need::Root]);
    let dir = TempDir::new("init-fail");
    let p = project("init-fail");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  db:
    containers: [ { name: db, command: sleep 30 } ]
  api:
    depends_on: [ db ]
    init_containers:
      - { name: migrate, command: [ sh, -c, 'echo no schema >&2; exit 3' ] }
      - { name: never, volumes: [ "./trace:/trace" ], command: [ sh, -c, 'echo never >> /trace' ] }
    containers:
      - { name: server, volumes: [ "./trace:/trace" ], command: [ sh, -c, 'echo server >> /trace' ] }
"#,
    );
    dir.write("trace", "");
    let _guard = Cleanup(p.clone());

    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("error: init container `migrate` of `api-1` failed: exited with code 3"),
        "{err}"
    );
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("api-1/migrate ") && l.ends_with("| no schema")),
        "{text}"
    );
    // neither the next init container nor the pod's container ran; `db` was stopped
    assert_eq!(fs::read_to_string(dir.path().join("trace")).unwrap(), "");
    let code = crate::test::stopped_sleep_code();
    assert!(
        err.contains(&format!("db-1: exited with code {code}")),
        "{err}"
    );
    assert_no_trace(&p);
}

#[test]
fn the_restart_policy_retries_a_failed_init_container() {
    require(&[Need::Root]);
    let dir = TempDir::new("init-retry");
    let p = project("init-retry");
    // fails on its first run, succeeds on its second
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  api:
    restart: on-failure
    init_containers:
      - name: wait
        volumes: [ "./state:/state" ]
        command: [ sh, -c, 'echo run >> /state/runs; [ $(wc -l < /state/runs) -ge 2 ]' ]
    containers:
      - { name: server, volumes: [ "./state:/state" ], command: [ sh, -c, 'echo server >> /state/runs' ] }
"#,
    );
    dir.write("state/runs", "");
    let _guard = Cleanup(p.clone());

    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    assert_eq!(
        fs::read_to_string(dir.path().join("state/runs")).unwrap(),
        "run\nrun\nserver\n"
    );
    let err = stderr(&out);
    assert!(err.contains("api-1/wait: exited with code 1"), "{err}");
    assert!(err.contains("api-1/wait: restarting"), "{err}");
    assert_no_trace(&p);
}

//! `tty: true`: the command gets a pseudo-terminal of its container's devpts as stdin,
//! stdout, stderr and controlling terminal, and its output still reaches the log.

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, project, rcompose, require, stdout,
};

#[test]
fn a_tty_container_writes_to_its_own_terminal_and_the_log_has_it() {
    require(&[Need::Root]);
    let dir = TempDir::new("tty");
    let p = project("tty");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  t:
    containers:
      - name: term
        tty: true
        command:
          - sh
          - -c
          - |
            echo "tty=$(tty)"
            [ -t 0 ] && echo stdin=terminal
            echo "size=$(stty size)"
            echo "ctty=$(ps -o tty= -p $$)"
            echo to-stderr >&2
      - name: plain
        command: [ sh, -c, 'tty >/dev/null || echo plain=not-a-terminal' ]
"#,
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    if let Some(runtime) = crate::test::external_runtime() {
        // not with an external runtime yet: refused before anything starts
        assert_code(&out, 1);
        assert!(
            crate::test::stderr(&out).contains(&format!(
                "container `t.term` asks for `tty`, which runtime `{runtime}` does not support yet"
            )),
            "{}",
            crate::test::stderr(&out)
        );
        assert_no_trace(&p);
        return;
    }
    assert_code(&out, 0);
    let text = stdout(&out);
    let has = |name: &str, line: &str| {
        text.lines()
            .any(|l| l.starts_with(&format!("t-1/{name} ")) && l.ends_with(&format!("| {line}")))
    };
    // the container's own devpts numbers from 0
    assert!(has("term", "tty=/dev/pts/0"), "{text}");
    assert!(has("term", "stdin=terminal"), "{text}");
    assert!(has("term", "size=24 80"), "{text}");
    assert!(has("term", "ctty=pts/0"), "{text}");
    assert!(has("term", "to-stderr"), "{text}");
    assert!(has("plain", "plain=not-a-terminal"), "{text}");
    assert_no_trace(&p);
}

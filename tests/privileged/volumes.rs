//! Volumes in real containers: host paths (read-write and read-only), named volumes that
//! outlive `down` until `down -v`, tmpfs with a size, and a pod's `empty_dir` shared by its
//! containers (one per replica); mount targets never follow a symlink of the image.

use std::fs;
use std::os::unix::fs::symlink;

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, busybox_rootfs, project, rcompose,
    require, stderr, stdout,
};

const STACK: &str = r#"
volumes:
  data:
pods:
  web:
    replicas: 2
    volumes: { shared: { empty_dir: {} } }
    containers:
      - name: writer
        volumes:
          - ./src:/src
          - ./conf:/conf:ro
          - data:/data
          - shared:/shared
          - { type: tmpfs, target: /cache, tmpfs: { size: 1Mi } }
        command:
          - /bin/sh
          - -c
          - |
            h=$(hostname)
            echo "$h" > /shared/note
            echo "$h" > /src/out-$h.txt
            echo "seen=$(ls /data | tr '\n' ,)"
            touch /data/$h
            touch /conf/x 2>/dev/null && echo conf=writable || echo conf=read-only
            echo "conf=$(cat /conf/app.conf)"
            grep ' /cache ' /proc/mounts | grep -o 'size=[0-9]*k'
      - name: reader
        volumes: [ "shared:/shared:ro" ]
        command:
          - /bin/sh
          - -c
          - |
            i=0; while [ ! -s /shared/note ] && [ $i -lt 200 ]; do i=$((i+1)); sleep 0.01; done
            echo "note=$(cat /shared/note) on $(hostname)"
            touch /shared/y 2>/dev/null && echo shared=writable || echo shared=read-only
"#;

fn lines_of(out: &std::process::Output) -> Vec<String> {
    stdout(out)
        .lines()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
}

#[test]
fn host_paths_named_volumes_tmpfs_and_empty_dirs() {
    require(&[Need::Root]);
    let dir = TempDir::new("vol-all");
    let p = project("vol-all");
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    dir.write("src/.keep", "");
    dir.write("conf/app.conf", "hello");
    dir.write("rcompose.yaml", STACK);
    let _guard = Cleanup(p.clone());
    let up = || rcompose(dir.path(), &["--store", store_arg, "-p", &p, "up"]);

    let out = up();
    assert_code(&out, 0);
    let lines = lines_of(&out);
    let text = lines.join("\n");
    for replica in ["web-1", "web-2"] {
        let has = |line: &str| lines.iter().any(|l| l == line);
        // the empty_dir is the replica's own, shared by its two containers
        assert!(
            has(&format!("{replica}/reader | note={replica} on {replica}")),
            "{text}\n{}",
            stderr(&out)
        );
        assert!(
            has(&format!("{replica}/reader | shared=read-only")),
            "{text}"
        );
        assert!(has(&format!("{replica}/writer | conf=read-only")), "{text}");
        assert!(has(&format!("{replica}/writer | conf=hello")), "{text}");
        assert!(has(&format!("{replica}/writer | size=1024k")), "{text}");
        // both replicas share the named volume: the second may see the first one's file
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{replica}/writer | seen="))),
            "{text}"
        );
        // the host path got the write
        assert_eq!(
            fs::read_to_string(dir.path().join(format!("src/out-{replica}.txt"))).unwrap(),
            format!("{replica}\n")
        );
    }
    assert!(!dir.path().join("conf/x").exists());
    assert_no_trace(&p);

    // the named volume outlived the stack; a new one sees what the first wrote
    let volume = store.join("volumes").join(&p).join("data");
    assert!(volume.join("web-1").is_file(), "{}", volume.display());
    let out = up();
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("web-1/writer | seen=web-1,web-2,"), "{text}");
    assert_no_trace(&p);

    // `down` keeps it, `down -v` removes it
    let out = rcompose(dir.path(), &["--store", store_arg, "-p", &p, "down"]);
    assert_code(&out, 0);
    assert!(volume.is_dir());
    let out = rcompose(dir.path(), &["--store", store_arg, "-p", &p, "down", "-v"]);
    assert_code(&out, 0);
    assert!(!store.join("volumes").exists(), "{}", stderr(&out));
}

#[test]
fn a_mount_target_through_a_symlink_of_the_image_is_refused() {
    require(&[Need::Root, Need::Busybox]);
    let dir = TempDir::new("vol-link");
    let p = project("vol-link");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    // the image points /evil at the host's /etc: a mount on /evil/x must not land there
    symlink("/etc", rootfs.join("evil")).unwrap();
    dir.write("data/.keep", "");
    dir.write(
        "rcompose.yaml",
        "images:\n  bb: { rootfs: ./rootfs }\npods:\n  c:\n    containers:\n      - name: c\n        image: bb\n        volumes: [ \"./data:/evil/rcompose-test-x\" ]\n        command: [true]\n",
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!std::path::Path::new("/etc/rcompose-test-x").exists());
    assert_no_trace(&p);
}

#[test]
fn a_missing_host_path_is_an_error_before_anything_starts() {
    require(&[Need::Root]);
    let dir = TempDir::new("vol-missing");
    let p = project("vol-missing");
    dir.write(
        "rcompose.yaml",
        "pods:\n  c:\n    containers:\n      - name: c\n        command: [true]\n        volumes: [ ./nowhere:/x ]\n",
    );
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains("mount source `./nowhere` of container `c.c` does not exist"),
        "{err}"
    );
    assert!(err.contains("rcompose.yaml:6:20"), "{err}");
    assert_no_trace(&p);
}

//! Images made by real tools (podman, skopeo) and plain tarballs: imported into a private
//! store, run, and stacked.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, busybox, busybox_rootfs, project,
    rcompose, require, stderr, stdout,
};

/// Runs a tool, failing the test with its output when it fails.
#[track_caller]
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("failed to start a tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An image built by podman from busybox, in three formats made by real tools:
/// `docker.tar` (podman save docker-archive), `oci.tar` (podman save oci-archive) and
/// `layout/` (skopeo copy to an OCI layout). Layer 2 adds /etc/gone, layer 3 deletes it
/// (a whiteout made by the tool) and the config sets Env, WorkingDir, User and Cmd.
fn podman_image(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ctx = dir.join("context");
    fs::create_dir_all(&ctx).unwrap();
    fs::copy(busybox().unwrap(), ctx.join("busybox")).unwrap();
    fs::write(ctx.join("gone"), "deleted in a later layer\n").unwrap();
    fs::write(
        ctx.join("Containerfile"),
        r#"FROM scratch
COPY busybox /bin/busybox
COPY gone /etc/gone
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && rm /etc/gone && mkdir -p /data && echo hi > /data/hello && echo 'app:x:1000:1000::/home/app:/bin/sh' > /etc/passwd && echo 'app:x:1000:' > /etc/group"]
ENV GREETING=hello
WORKDIR /data
USER app
CMD ["/bin/sh", "-c", "echo $GREETING from $(pwd) as $(id -u):$(id -g) home $HOME; ls -a /etc"]
"#,
    )
    .unwrap();
    // podman refuses a runroot longer than 50 characters: a short directory of its own
    let storage_dir = TempDir::new("pm");
    let storage = storage_dir.path().to_path_buf();
    let podman = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        cmd
    };
    let tag = "localhost/rcompose-test:1";
    run(podman(&["build", "--isolation", "chroot", "-t", tag]).arg(&ctx));
    let docker = dir.join("docker.tar");
    let oci = dir.join("oci.tar");
    let layout = dir.join("layout");
    run(podman(&["save", "--format", "docker-archive", "-o"])
        .arg(&docker)
        .arg(tag));
    run(podman(&["save", "--format", "oci-archive", "-o"])
        .arg(&oci)
        .arg(tag));
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci-archive:{}", oci.display()))
        .arg(format!("oci:{}:t1", layout.display())));
    // vfs storage holds no mounts: removing the directory removes podman's state
    let _ = run(podman(&["rmi", "-a", "-f"]).stderr(Stdio::null()));
    drop(storage_dir);
    (docker, oci, layout)
}

#[test]
fn images_made_by_podman_and_skopeo_import_and_run() {
    require(&[
        Need::Root,
        Need::Busybox,
        Need::Tool("podman"),
        Need::Tool("skopeo"),
    ]);
    let dir = TempDir::new("podman-images");
    let (docker, oci, layout) = podman_image(dir.path());
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    let mut ids = Vec::new();
    for archive in [&docker, &oci, &layout] {
        let out = rcompose(
            dir.path(),
            &[
                "--store",
                store_arg,
                "image",
                "import",
                archive.to_str().unwrap(),
            ],
        );
        assert_code(&out, 0);
        let line = stdout(&out);
        let (id, name) = line.trim().split_once(' ').unwrap();
        ids.push(id.to_string());
        assert!(
            name == "localhost/rcompose-test:1" || name == "t1",
            "{line}"
        );
    }
    // one image whatever the format: same config, same layers, unpacked once
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let listed = rcompose(
        dir.path(),
        &["--store", store_arg, "images", "--format", "json"],
    );
    assert_code(&listed, 0);
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["layers"], 3);
    assert_eq!(
        fs::read_dir(store.join("layers/sha256")).unwrap().count(),
        3
    );

    for (i, archive) in [&docker, &oci, &layout].iter().enumerate() {
        let p = project(&format!("img{i}"));
        let _guard = Cleanup(p.clone());
        let manifest = format!(
            "images:\n  app:\n    archive: {}\npods:\n  web:\n    containers:\n      - name: main\n        image: app\n",
            archive.display()
        );
        dir.write("rcompose.yaml", &manifest);
        let out = rcompose(dir.path(), &["--store", store_arg, "-p", &p, "up"]);
        assert_code(&out, 0);
        let text = stdout(&out);
        // Cmd, Env, WorkingDir and User from the image config; the deleted file is gone
        assert!(
            text.contains("web-1 | hello from /data as 1000:1000 home /home/app"),
            "{text}\n{}",
            stderr(&out)
        );
        assert!(text.contains("web-1 | passwd"), "{text}");
        assert!(
            !text.contains("gone"),
            "a whiteout was not honoured:\n{text}"
        );
        assert_no_trace(&p);
    }

    // The same image pushed by skopeo to a local registry: pulled with `rcompose pull`, by
    // `up` (pull: missing finds it, pull: always fetches the manifest again), and pinned.
    let server = super::registry::Server::start(&dir, false);
    let pushed = format!("{}/test/app:1", server.host());
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:t1", layout.display()))
        .arg(format!("docker://{pushed}")));
    let fresh = dir.path().join("store2");
    let fresh_arg = fresh.to_str().unwrap();
    let out = rcompose(dir.path(), &["--store", fresh_arg, "pull", &pushed]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out).trim(), format!("{} {pushed}", ids[0]));
    let listed = rcompose(
        dir.path(),
        &["--store", fresh_arg, "images", "--format", "json"],
    );
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows[0]["names"][0], pushed.as_str(), "{rows}");
    let manifest_digest = {
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(fresh.join("images.json")).unwrap()).unwrap();
        index["images"][&ids[0]]["manifest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (i, reference) in [
        pushed.clone(),
        format!("{}/test/app@{manifest_digest}", server.host()),
    ]
    .iter()
    .enumerate()
    {
        for policy in ["missing", "always"] {
            let p = project(&format!("pull{i}-{policy}"));
            let _guard = Cleanup(p.clone());
            let manifest = format!(
                "images:
  app:
    ref: {reference}
    pull: {policy}
pods:
  web:
    containers:
      - name: main
        image: app
"
            );
            dir.write("rcompose.yaml", &manifest);
            let out = rcompose(dir.path(), &["--store", fresh_arg, "-p", &p, "up"]);
            assert_code(&out, 0);
            let text = stdout(&out);
            assert!(
                text.contains("hello from /data as 1000:1000"),
                "{text}
{}",
                stderr(&out)
            );
            assert!(!text.contains("gone"), "{text}");
            assert_no_trace(&p);
        }
    }
    // A registry image the store lacks with `pull: never` fails before anything starts.
    dir.write(
        "rcompose.yaml",
        &format!(
            "images:
  app:
    ref: {}/test/other:1
    pull: never
pods:
  web:
    containers:
      - name: main
        image: app
",
            server.host()
        ),
    );
    let p = project("pull-never");
    let out = rcompose(dir.path(), &["--store", fresh_arg, "-p", &p, "up"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("not in the store, and the pull policy is `never`"),
        "{}",
        stderr(&out)
    );
    assert_no_trace(&p);
    drop(server);

    // The manifest overrides command, env, working_dir (Docker's rules).
    let p = project("img-override");
    let _guard = Cleanup(p.clone());
    let manifest = format!(
        "images:\n  app:\n    archive: {}\npods:\n  web:\n    containers:\n      - name: main\n        image: app\n        command: [sh, -c, 'echo $GREETING in $(pwd)']\n        env: {{GREETING: overridden}}\n        working_dir: /tmp\n",
        docker.display()
    );
    dir.write("rcompose.yaml", &manifest);
    let out = rcompose(dir.path(), &["--store", store_arg, "-p", &p, "up"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("web-1 | overridden in /tmp"),
        "{}",
        stdout(&out)
    );
    assert_no_trace(&p);
}

#[test]
fn concurrent_imports_of_one_archive_both_succeed_with_one_unpack() {
    require(&[Need::Root, Need::Busybox]);
    let dir = TempDir::new("concurrent-import");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    // a few megabytes, so that the two imports overlap
    fs::write(rootfs.join("blob"), vec![7u8; 16 << 20]).unwrap();
    let tar = dir.path().join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let store = dir.path().join("store");
    let spawn = || {
        Command::new(crate::test::bin())
            .args(["--store", store.to_str().unwrap(), "image", "import"])
            .arg(&tar)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_code(&a, 0);
    assert_code(&b, 0);
    assert_eq!(stdout(&a), stdout(&b));
    let unpacks = [&a, &b]
        .iter()
        .map(|o| stderr(o).matches(": unpacking").count())
        .sum::<usize>();
    assert_eq!(unpacks, 1, "{}\n{}", stderr(&a), stderr(&b));
    assert_eq!(
        fs::read_dir(store.join("layers/sha256")).unwrap().count(),
        1
    );
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);
}

#[test]
fn rootfs_tarballs_and_tarball_layers_run() {
    require(&[Need::Root, Need::Busybox]);
    let dir = TempDir::new("tarballs");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-czf")
        .arg(dir.path().join("rootfs.tar.gz"))
        .arg("."));
    let app = dir.path().join("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("run.sh"), "echo app layer at $0\n").unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&app)
        .arg("-cf")
        .arg(dir.path().join("app.tar"))
        .arg("."));
    dir.write(
        "rcompose.yaml",
        "images:\n  base:\n    archive: ./rootfs.tar.gz\n  app:\n    from: base\n    layers:\n      - { source: ./app.tar, target: /srv/app }\npods:\n  web:\n    containers:\n      - name: main\n        image: app\n        command: [sh, /srv/app/run.sh]\n",
    );
    let store = dir.path().join("store");
    let p = project("tarballs");
    let _guard = Cleanup(p.clone());
    for _ in 0..2 {
        // the second run finds everything in the store
        let out = rcompose(
            dir.path(),
            &["--store", store.to_str().unwrap(), "-p", &p, "up"],
        );
        assert_code(&out, 0);
        assert!(
            stdout(&out).contains("web-1 | app layer at /srv/app/run.sh"),
            "{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        assert_no_trace(&p);
    }
    assert_eq!(
        fs::read_dir(store.join("layers/sha256")).unwrap().count(),
        2
    );
}

#[test]
fn a_bad_archive_fails_up_before_anything_starts() {
    require(&[Need::Root]);
    let dir = TempDir::new("bad-archive");
    dir.write(
        "junk.tar",
        "this is not a tar archive at all, but it is long enough to look at",
    );
    dir.write(
        "rcompose.yaml",
        "images:\n  app:\n    archive: ./junk.tar\npods:\n  web:\n    containers:\n      - name: main\n        image: app\n        command: [true]\n",
    );
    let store = dir.path().join("store");
    let p = project("bad-archive");
    let _guard = Cleanup(p.clone());
    let out = rcompose(
        dir.path(),
        &["--store", store.to_str().unwrap(), "-p", &p, "up"],
    );
    assert_code(&out, 1);
    assert!(stderr(&out).contains("junk.tar"), "{}", stderr(&out));
    assert_no_trace(&p);
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);
}

#[test]
fn prune_keeps_layers_of_running_containers() {
    require(&[Need::Root, Need::Busybox]);
    let dir = TempDir::new("prune");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(dir.path().join("base.tar"))
        .arg("."));
    dir.write(
        "rcompose.yaml",
        "images:\n  base:\n    archive: ./base.tar\npods:\n  web:\n    containers:\n      - name: main\n        image: base\n        command: [sleep, '300']\n",
    );
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let p = project("prune");
    let _guard = Cleanup(p.clone());
    assert_code(
        &rcompose(dir.path(), &["--store", s, "-p", &p, "up", "-d"]),
        0,
    );
    let listed = rcompose(dir.path(), &["--store", s, "images", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = rows[0]["id"].as_str().unwrap().to_string();
    assert_code(
        &rcompose(dir.path(), &["--store", s, "image", "rm", &id]),
        0,
    );
    let pruned = rcompose(dir.path(), &["--store", s, "image", "prune"]);
    assert_code(&pruned, 0);
    assert!(
        stdout(&pruned).starts_with("removed 0 layers"),
        "{}",
        stdout(&pruned)
    );
    assert_eq!(
        fs::read_dir(store.join("layers/sha256")).unwrap().count(),
        1
    );
    assert_code(
        &rcompose(dir.path(), &["--store", s, "-p", &p, "down", "-t", "1"]),
        0,
    );
    assert_no_trace(&p);
    let pruned = rcompose(dir.path(), &["--store", s, "image", "prune"]);
    assert!(
        stdout(&pruned).starts_with("removed 1 layers"),
        "{}",
        stdout(&pruned)
    );
    assert_eq!(
        fs::read_dir(store.join("layers/sha256")).unwrap().count(),
        0
    );
    assert_eq!(fs::read_dir(store.join("blobs/sha256")).unwrap().count(), 0);
}

#[test]
fn stacks_without_stored_images_never_create_the_store() {
    require(&[Need::Root]);
    let dir = TempDir::new("no-store");
    dir.write(
        "rcompose.yaml",
        "pods:\n  web:\n    containers:\n      - name: main\n        command: [true]\n",
    );
    let store = dir.path().join("store");
    let p = project("no-store");
    let _guard = Cleanup(p.clone());
    for args in [&["up"][..], &["up", "-d"], &["down"]] {
        let mut all = vec!["--store", store.to_str().unwrap(), "-p", &p];
        all.extend_from_slice(args);
        assert_code(&rcompose(dir.path(), &all), 0);
    }
    assert!(!store.exists());
    assert_no_trace(&p);
}

#[test]
fn the_command_runs_as_the_containers_user() {
    require(&[Need::Root]);
    let dir = TempDir::new("user");
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let nobody = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("the host has a `nobody` user");
    let uid = nobody.split(':').nth(2).unwrap();
    dir.write(
        "rcompose.yaml",
        "pods:\n  a:\n    containers:\n      - { name: byname, user: nobody, command: [sh, -c, 'echo $(id -u) $HOME'] }\n      - { name: numeric, user: '4321:4322', command: [sh, -c, 'echo $(id -u):$(id -g) $HOME'] }\n",
    );
    let p = project("user");
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    // log prefixes are padded to one width: compare with single spaces
    let text = stdout(&out).replace("  ", " ");
    assert!(
        text.contains(&format!("a-1/byname | {uid} /nonexistent")),
        "{text}"
    );
    assert!(text.contains("a-1/numeric | 4321:4322 /"), "{text}");
    assert_no_trace(&p);
    dir.write(
        "rcompose.yaml",
        "pods:\n  a:\n    containers:\n      - { name: missing, user: no-such-user, command: [true] }\n",
    );
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 1);
    assert!(
        // checked against the image before anything starts
        stderr(&out).contains("container `a-1/missing` cannot run as `no-such-user`: user `no-such-user` is not in the image's /etc/passwd"),
        "{}",
        stderr(&out)
    );
    assert_no_trace(&p);
}

#[test]
fn more_layers_than_one_page_of_mount_options_still_stack() {
    require(&[Need::Root, Need::Busybox]);
    let dir = TempDir::new("many-layers");
    busybox_rootfs(&dir.path().join("rootfs"));
    let long =
        "a-directory-name-long-enough-that-fifty-of-them-overflow-one-page-of-overlay-options";
    let mut layers = String::new();
    for i in 0..50 {
        let layer = dir.path().join(format!("{long}-{i:02}"));
        fs::create_dir_all(&layer).unwrap();
        fs::write(layer.join(format!("f{i:02}")), "").unwrap();
        layers.push_str(&format!("      - ./{long}-{i:02}\n"));
    }
    dir.write(
        "rcompose.yaml",
        &format!("images:\n  app:\n    rootfs: ./rootfs\n    layers:\n{layers}pods:\n  a:\n    containers:\n      - {{ name: c, image: app, command: [sh, -c, 'ls / | grep -c ^f'] }}\n"),
    );
    let p = project("many-layers");
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("a-1 | 50"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_no_trace(&p);
}

#[test]
fn setuid_files_in_layers_are_refused_unless_the_image_allows_them() {
    require(&[Need::Root, Need::Busybox]);
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("setuid");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    fs::write(rootfs.join("bin/su-like"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        rootfs.join("bin/su-like"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(dir.path().join("base.tar"))
        .arg("."));
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let p = project("setuid");
    let _guard = Cleanup(p.clone());
    let manifest = |allow: &str| {
        format!(
            "images:\n  base:\n    archive: ./base.tar\n{allow}pods:\n  a:\n    containers:\n      - {{ name: c, image: base, command: [sh, -c, 'stat -c %a /bin/su-like'] }}\n"
        )
    };
    dir.write("rcompose.yaml", &manifest(""));
    let out = rcompose(dir.path(), &["--store", s, "-p", &p, "up"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("entry `./bin/su-like`: mode 4755 has the setuid or setgid bit")
            && stderr(&out).contains("set `allow_setuid: true` on the image"),
        "{}",
        stderr(&out)
    );
    assert_no_trace(&p);
    assert_eq!(
        fs::read_dir(store.join("layers/sha256")).unwrap().count(),
        0
    );
    dir.write("rcompose.yaml", &manifest("    allow_setuid: true\n"));
    let out = rcompose(dir.path(), &["--store", s, "-p", &p, "up"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("a-1 | 4755"), "{}", stdout(&out));
    assert_no_trace(&p);
}

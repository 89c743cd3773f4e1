//! Everyday comforts: completions, the man page, `--format json` listings, the project
//! directory, the environment variables for -f and -p, and hints at the end of errors.

use std::fs;
use std::process::{Command, Stdio};

use crate::test::{TempDir, assert_code, rcompose, stderr, stdout};

/// `rcompose completion bash` is a script bash loads, whose function completes the
/// subcommands and their options, and offers no hidden command.
#[test]
fn bash_completion_completes_subcommands_and_options() {
    let complete = |words: &str| {
        let script = format!(
            "source <('{}' completion bash) && COMP_WORDS=({words}) && COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) && _rcompose rcompose \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\" && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            crate::test::bin()
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("bash must be installed");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let words = complete("rcompose ro");
    assert_eq!(words, "rollout\n");
    let words = complete("rcompose ''");
    for sub in [
        "up",
        "down",
        "ps",
        "logs",
        "ls",
        "completion",
        "man",
        "version",
    ] {
        assert!(words.lines().any(|w| w == sub), "no `{sub}` in {words}");
    }
    assert!(!words.contains("__supervise"), "{words}");
    let words = complete("rcompose up --ab");
    assert_eq!(words, "--abort-on-exit\n");
}

#[test]
fn zsh_and_fish_completions_name_the_commands() {
    let dir = TempDir::new("cli-completion");
    for (shell, marker) in [
        ("zsh", "#compdef rcompose"),
        ("fish", "complete -c rcompose"),
    ] {
        let out = rcompose(dir.path(), &["completion", shell]);
        assert_code(&out, 0);
        let text = stdout(&out);
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("rollout"), "{shell}");
        assert!(!text.contains("__supervise"), "{shell}");
    }
    let out = rcompose(dir.path(), &["completion", "tcsh"]);
    assert_code(&out, 2);
}

/// The man page is valid roff (groff reports no warning) and lists every command; `-o`
/// writes a page per command.
#[test]
fn man_page_renders_without_warnings() {
    let dir = TempDir::new("cli-man");
    let out = rcompose(dir.path(), &["man"]);
    assert_code(&out, 0);
    let page = stdout(&out);
    assert!(page.contains(".TH rcompose 1"), "{page}");
    assert!(page.contains("rcompose\\-up(1)"));
    assert!(page.contains("rcompose\\-ls(1)"));
    assert!(!page.contains("supervise"));
    fs::write(dir.path().join("rcompose.1"), &page).unwrap();
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(dir.path().join("rcompose.1"))
        .output()
        .expect("groff must be installed (apt: groff-base): the man page test renders the page");
    assert!(groff.status.success(), "{groff:?}");
    assert_eq!(String::from_utf8_lossy(&groff.stderr), "", "groff warnings");

    let out = rcompose(dir.path(), &["man", "-o", "pages"]);
    assert_code(&out, 0);
    for page in ["rcompose.1", "rcompose-up.1", "rcompose-rollout-undo.1"] {
        let text = fs::read_to_string(dir.path().join("pages").join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}

#[test]
fn graph_lists_waves_and_edges_as_json() {
    let dir = TempDir::new("cli-graph-json");
    dir.write(
        "rcompose.yaml",
        "pods:
  db:
    containers: [{ name: d, command: [sleep, '1'] }]
  api:
    replicas: 2
    depends_on: { db: { condition: completed } }
    containers: [{ name: a, command: [sleep, '1'] }]
",
    );
    let out = rcompose(dir.path(), &["graph", "--format", "json"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["waves"], serde_json::json!([["db"], ["api"]]));
    assert_eq!(
        v["pods"],
        serde_json::json!([
            { "name": "api", "replicas": 2, "depends_on": [ { "pod": "db", "condition": "completed" } ] },
            { "name": "db", "replicas": 1, "depends_on": [] },
        ])
    );
}

/// `ls` reads the projects under the run directory; none there is an empty list.
#[test]
fn ls_of_an_empty_run_directory() {
    let dir = TempDir::new("cli-ls");
    let out = Command::new(crate::test::bin())
        .args(["ls", "--format", "json"])
        .env("RCOMPOSE_RUN_DIR", dir.path().join("none"))
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "[]\n");
}

/// Without -f the manifest is looked for in `--project-directory`, whose relative paths
/// (here a bind mount source) start there.
#[test]
fn project_directory_finds_the_manifest_and_anchors_relative_paths() {
    let dir = TempDir::new("cli-projdir");
    let project = dir.path().join("shop");
    fs::create_dir_all(project.join("conf")).unwrap();
    fs::write(
        project.join("rcompose.yaml"),
        "pods:
  web:
    containers:
      - name: w
        command: [sleep, '1']
        volumes: [ './conf:/etc/web:ro' ]
",
    )
    .unwrap();
    let out = rcompose(dir.path(), &["--project-directory", "shop", "config", "-q"]);
    assert_code(&out, 0);
    // the manifest named with -f, its paths taken from another directory: `conf` is not
    // there
    fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
    let out = rcompose(
        dir.path(),
        &[
            "-f",
            "shop/rcompose.yaml",
            "--project-directory",
            "elsewhere",
            "config",
            "-q",
        ],
    );
    assert_code(&out, 3);
    assert!(stderr(&out).contains("./conf"), "{}", stderr(&out));
    let out = rcompose(dir.path(), &["--project-directory", "nowhere", "config"]);
    assert_code(&out, 3);
    assert!(
        stderr(&out).starts_with(&format!(
            "error: no rcompose.yaml, compose.yaml, compose.yml, docker-compose.yml or docker-compose.yaml in `{}`",
            "nowhere"
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rcompose_file_and_project_name_come_from_the_environment() {
    let dir = TempDir::new("cli-env");
    dir.write(
        "other.yaml",
        "name: envproj\npods:\n  web:\n    containers: [{ name: w, command: [sleep, '1'] }]\n",
    );
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(crate::test::bin());
        cmd.args(args).current_dir(dir.path()).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(
        &[("RCOMPOSE_FILE", "other.yaml")],
        &["config", "--format", "json"],
    );
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "envproj");
    // -f wins over the variable
    let out = run(
        &[("RCOMPOSE_FILE", "nope.yaml")],
        &["-f", "other.yaml", "config", "-q"],
    );
    assert_code(&out, 0);
    let out = run(&[("RCOMPOSE_PROJECT_NAME", "Not Valid")], &["ps"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).starts_with("error: invalid project name `Not Valid`"),
        "{}",
        stderr(&out)
    );
}

/// Errors end with what to do.
#[test]
fn errors_end_with_a_hint() {
    let dir = TempDir::new("cli-hints");
    let p = crate::test::project("hints");
    let out = rcompose(dir.path(), &["-p", &p, "stop"]);
    assert_code(&out, 1);
    assert_eq!(
        stderr(&out),
        format!(
            "error: project `{p}` is not up (no supervisor runs it)\n\
             hint: start it with `rcompose -p {p} up -d` (or from its directory); `rcompose ls` lists the projects on this machine\n"
        )
    );
    let store = dir.path().join("store");
    let out = rcompose(
        dir.path(),
        &["--store", store.to_str().unwrap(), "image", "rm", "nothing"],
    );
    assert_code(&out, 1);
    assert_eq!(
        stderr(&out),
        "error: no image `nothing` in the store\n\
         hint: `rcompose images` lists the store; `rcompose pull REFERENCE` or `rcompose image import FILE` adds an image\n"
    );
}

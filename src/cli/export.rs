//! `rcompose export kubernetes`: reads what the pure exporter needs (config and secret
//! contents), runs it, prints its warnings and writes the objects.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::error::Error;
use crate::export::kubernetes::{self, GENERATED_MARKER, Input, Object, Options, PublishAs};
use crate::manifest::{Bytes, FileSource};

use super::Context;

/// `export kubernetes` arguments.
#[derive(Debug, Args)]
pub(super) struct KubernetesArgs {
    /// The directory to write, one file per object (`deployment-web.yaml`), made when
    /// missing; `-` writes every object to stdout as one multi-document YAML stream
    #[arg(
        short = 'o',
        long = "output",
        value_name = "DIR",
        default_value = "k8s"
    )]
    output: PathBuf,
    /// The Service type of published ports: a LoadBalancer on the published port, or a
    /// NodePort (the published port when it is in 30000-32767)
    #[arg(long, value_enum, value_name = "TYPE", default_value_t = PublishType::Loadbalancer)]
    publish_as: PublishType,
    /// The storage each named volume's PersistentVolumeClaim requests
    #[arg(long, value_name = "SIZE", default_value = "1Gi", value_parser = parse_size)]
    volume_size: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PublishType {
    Loadbalancer,
    Nodeport,
}

fn parse_size(s: &str) -> Result<Bytes, String> {
    Bytes::parse(s)
}

/// Exports the manifest of `ctx` to Kubernetes objects.
pub(super) fn kubernetes(ctx: &Context, args: &KubernetesArgs) -> Result<ExitCode, Error> {
    let (m, desired, files) = ctx.load()?;
    // the marker line names the manifest's files as given, so the output does not depend on
    // where the project lives
    let named = ctx
        .manifest_paths()?
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join("`, `");
    let base = files
        .first()
        .and_then(|abs| abs.parent())
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let configs = contents(m.configs(), &base, "config")?;
    let secrets = contents(m.secrets(), &base, "secret")?;
    let input = Input {
        manifest: &m,
        project: &desired.project,
        base_dir: &base,
        configs: &configs,
        secrets: &secrets,
    };
    let options = Options {
        publish_as: match args.publish_as {
            PublishType::Loadbalancer => PublishAs::LoadBalancer,
            PublishType::Nodeport => PublishAs::NodePort,
        },
        volume_size: args.volume_size,
    };
    let export = kubernetes::export(&input, &options)?;
    for w in &export.warnings {
        eprintln!("warning: {w}");
    }
    if args.output == Path::new("-") {
        let mut out = std::io::stdout().lock();
        let mut text = format!("{GENERATED_MARKER} from `{named}`\n");
        for (i, o) in export.objects.iter().enumerate() {
            if i > 0 {
                text.push_str("---\n");
            }
            text.push_str(&o.to_yaml());
        }
        let _ = out.write_all(text.as_bytes());
        return Ok(ExitCode::SUCCESS);
    }
    write_dir(&args.output, &export.objects, &named)?;
    eprintln!(
        "wrote {} Kubernetes object(s) to {} ({} warning(s))",
        export.objects.len(),
        args.output.display(),
        export.warnings.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The content of each config or secret: a file relative to the manifest's directory, an
/// environment variable, or inline text.
fn contents(
    sources: &BTreeMap<String, FileSource>,
    base: &Path,
    what: &str,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let mut out = BTreeMap::new();
    for (name, source) in sources {
        let bytes = match source {
            FileSource::Content(text) => text.clone().into_bytes(),
            FileSource::File(file) => {
                let p = crate::plan::resolve(base, file);
                fs::read(&p).map_err(|source| Error::Io {
                    what: format!("read {what} `{name}` from `{}`", p.display()),
                    source,
                })?
            }
            FileSource::Environment(var) => {
                use std::os::unix::ffi::OsStringExt as _;
                std::env::var_os(var)
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "{what} `{name}` comes from the environment variable `{var}`, which is not set"
                        ))
                    })?
                    .into_vec()
            }
        };
        out.insert(name.clone(), bytes);
    }
    Ok(out)
}

/// Writes one file per object into `dir` (each through a temporary file renamed into
/// place), and removes the files an earlier export wrote there that this one did not.
fn write_dir(dir: &Path, objects: &[Object], manifest: &str) -> Result<(), Error> {
    let io = |what: String| move |source| Error::Io { what, source };
    fs::create_dir_all(dir).map_err(io(format!("create `{}`", dir.display())))?;
    let mut written = BTreeSet::new();
    for o in objects {
        let name = o.file_name();
        let file = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let text = format!("{GENERATED_MARKER} from `{manifest}`\n{}", o.to_yaml());
        fs::write(&tmp, text).map_err(io(format!("write `{}`", tmp.display())))?;
        fs::rename(&tmp, &file).map_err(io(format!("write `{}`", file.display())))?;
        written.insert(name);
    }
    // stale files of an earlier export (a pod since removed), recognised by the marker
    let entries = fs::read_dir(dir).map_err(io(format!("read `{}`", dir.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") || written.contains(&name) {
            continue;
        }
        let generated =
            fs::read_to_string(entry.path()).is_ok_and(|t| t.starts_with(GENERATED_MARKER));
        if generated {
            fs::remove_file(entry.path())
                .map_err(io(format!("remove the stale `{}`", entry.path().display())))?;
            eprintln!("removed {} (not in this export)", entry.path().display());
        }
    }
    Ok(())
}

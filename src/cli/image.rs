//! `images`, `image import|ls|rm|prune`, and the layer progress display.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::Subcommand;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::{Context, Format, print_str};
use crate::error::Error;
use crate::image::archive::{self, ImportOptions};
use crate::image::digest::Digest;
use crate::image::prepare::PrepareOptions;
use crate::image::store::{ImageRecord, Store};
use crate::image::unpack::SetuidPolicy;
use crate::image::{Event, Progress};
use crate::plan::desired::{LayerPlan, PullPolicy, StoredImage};
use crate::runtime::ContainerConfig;

#[derive(Debug, Subcommand)]
pub(super) enum ImageCommand {
    /// Import a `docker save` archive, an OCI layout (directory or tar) or a rootfs tar(.gz)
    Import {
        /// The archive
        file: PathBuf,
        /// Also name the imported image NAME
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Keep setuid/setgid bits of files in the layers (refused by default)
        #[arg(long)]
        allow_setuid: bool,
        /// Layers unpacked at once [default: the number of CPUs]
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
    },
    /// List the images in the store
    Ls {
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove names (or, by id, whole images); layers stay until `image prune`
    Rm {
        /// Names or ids (at least 12 hex digits)
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove layers and blobs that no image uses
    Prune,
}

impl Context {
    pub(super) fn open_store(&self) -> Result<Store, Error> {
        Ok(Store::open(&self.store)?)
    }
}

pub(super) fn run(ctx: &Context, command: ImageCommand) -> Result<ExitCode, Error> {
    match command {
        ImageCommand::Import {
            file,
            name,
            allow_setuid,
            jobs,
        } => {
            let store = ctx.open_store()?;
            let mut options = ImportOptions {
                name,
                ..ImportOptions::default()
            };
            if let Some(jobs) = jobs {
                options.jobs = jobs.max(1);
            }
            if allow_setuid {
                options.limits.setuid = SetuidPolicy::Allow;
            }
            let progress = LayerProgress::new();
            let records = archive::import(&store, &file, &options, &progress)?;
            progress.finish();
            for record in records {
                let name = record.names.first().cloned().unwrap_or_default();
                println!("{} {name}", record.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Ls { format } => list(ctx, format),
        ImageCommand::Rm { images } => {
            let store = ctx.open_store()?;
            for name in images {
                let record = store.remove_image(&name)?;
                if record.names.contains(&name) && record.names.len() > 1 {
                    println!("untagged {name}");
                } else {
                    println!("deleted {}", record.id);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Prune => {
            let store = ctx.open_store()?;
            let report = store.prune(&in_use(ctx))?;
            println!(
                "removed {} layers, {} blobs, {} leftover temp entries",
                report.layers.len(),
                report.blobs.len(),
                report.temp
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Layers that projects' containers stack (from their `config.json` under the run root):
/// `prune` keeps them even when their image was removed.
fn in_use(ctx: &Context) -> BTreeSet<Digest> {
    let layers = ctx.store.join("layers/sha256");
    let mut used = BTreeSet::new();
    let pattern = |dir: &std::path::Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    // A container's directory is `<run root>/<project>/<pod>-<n>.<container>/`.
    for project in pattern(&Context::run_root()) {
        for container in pattern(&project) {
            let Ok(bytes) = std::fs::read(container.join(crate::runtime::CONFIG_FILE)) else {
                continue;
            };
            let Ok(config) = serde_json::from_slice::<ContainerConfig>(&bytes) else {
                continue;
            };
            for lower in config.rootfs.lowers {
                if let Ok(rest) = lower.strip_prefix(&layers)
                    && let Some(hex) = rest.to_str()
                    && let Ok(digest) = format!("sha256:{hex}").parse()
                {
                    used.insert(digest);
                }
            }
        }
    }
    used
}

/// `pull`: the named references, or every `ref:` image of the manifest, pulled whatever the
/// store holds (layers already there are not downloaded again).
pub(super) fn pull(
    ctx: &Context,
    images: &[String],
    insecure: Vec<String>,
    jobs: Option<usize>,
    allow_setuid: bool,
) -> Result<ExitCode, Error> {
    let references: Vec<String> = if images.is_empty() {
        let desired = ctx.desired()?;
        let mut refs: Vec<String> = desired
            .pods
            .values()
            .flat_map(|p| &p.containers)
            .filter_map(|c| match c.rootfs.layers.first() {
                Some(LayerPlan::Stored(StoredImage::Registry { reference, .. })) => {
                    Some(reference.clone())
                }
                _ => None,
            })
            .collect();
        refs.sort();
        refs.dedup();
        refs
    } else {
        images.to_vec()
    };
    if references.is_empty() {
        eprintln!("nothing to pull: the manifest has no `ref:` image");
        return Ok(ExitCode::SUCCESS);
    }
    let store = ctx.open_store()?;
    let mut options = PrepareOptions {
        insecure,
        ..PrepareOptions::default()
    };
    if let Some(jobs) = jobs {
        options.jobs = jobs.max(1);
    }
    if allow_setuid {
        options.limits.setuid = SetuidPolicy::Allow;
    }
    let progress = LayerProgress::new();
    for reference in references {
        let result =
            crate::image::pull::ensure(&store, &reference, PullPolicy::Always, &options, &progress);
        let record = match result {
            Ok(r) => r,
            Err(e) => {
                progress.finish();
                return Err(e.into());
            }
        };
        let name = record.names.first().cloned().unwrap_or(reference);
        println!("{} {name}", record.id);
    }
    progress.finish();
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct ImageRow<'a> {
    id: &'a Digest,
    names: &'a [String],
    size: u64,
    layers: usize,
    created: Option<&'a str>,
    source: &'a str,
    config: &'a crate::image::store::ImageConfig,
}

pub(super) fn list(ctx: &Context, format: Format) -> Result<ExitCode, Error> {
    let store = ctx.open_store()?;
    let images = store.images().map_err(crate::image::ImageError::from)?;
    match format {
        Format::Json => {
            let rows: Vec<ImageRow<'_>> = images
                .iter()
                .map(|r| ImageRow {
                    id: &r.id,
                    names: &r.names,
                    size: size(r),
                    layers: r.layers.len(),
                    created: r.config.created.as_deref(),
                    source: &r.source,
                    config: &r.config,
                })
                .collect();
            print_str(&serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into()));
        }
        Format::Table => print_str(&table(&images)),
    }
    Ok(ExitCode::SUCCESS)
}

fn size(record: &ImageRecord) -> u64 {
    record.layers.iter().map(|l| l.size).sum()
}

/// `name:tag` split at the tag's colon (not a registry port's).
fn split_name(name: &str) -> (&str, &str) {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, "<none>"),
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn table(images: &[ImageRecord]) -> String {
    let mut rows = vec![[
        "REPOSITORY".to_string(),
        "TAG".into(),
        "IMAGE ID".into(),
        "LAYERS".into(),
        "SIZE".into(),
    ]];
    for image in images {
        let short = image.id.hex()[..12].to_string();
        let names: Vec<&str> = if image.names.is_empty() {
            vec!["<none>"]
        } else {
            image.names.iter().map(String::as_str).collect()
        };
        for name in names {
            let (repo, tag) = if name == "<none>" {
                ("<none>", "<none>")
            } else {
                split_name(name)
            };
            rows.push([
                repo.to_string(),
                tag.to_string(),
                short.clone(),
                image.layers.len().to_string(),
                human(size(image)),
            ]);
        }
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Progress of layer work: one bar per layer on a terminal, plain lines otherwise.
pub(super) struct LayerProgress {
    bars: Option<(MultiProgress, Mutex<HashMap<Digest, ProgressBar>>)>,
}

impl LayerProgress {
    pub(super) fn new() -> LayerProgress {
        let bars = io::stderr().is_terminal().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        LayerProgress { bars }
    }

    pub(super) fn finish(&self) {
        if let Some((multi, _)) = &self.bars {
            let _ = multi.clear();
        }
    }
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

impl Progress for LayerProgress {
    fn event(&self, event: Event<'_>) {
        let Some((multi, bars)) = &self.bars else {
            match event {
                Event::Start {
                    diff_id,
                    size,
                    phase,
                } => {
                    eprintln!("layer {}: {phase} {}", short(diff_id), human(size));
                }
                Event::Done { diff_id } => eprintln!("layer {}: done", short(diff_id)),
                Event::Present { diff_id } => {
                    eprintln!("layer {}: already present", short(diff_id));
                }
                Event::Advance { .. } => {}
            }
            return;
        };
        let Ok(mut bars) = bars.lock() else { return };
        match event {
            Event::Start { diff_id, size, .. } => {
                if let Some(old) = bars.remove(diff_id) {
                    old.finish_and_clear();
                }
                let bar = multi.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("layer {}", short(diff_id)));
                bars.insert(diff_id.clone(), bar);
            }
            Event::Advance { diff_id, bytes } => {
                if let Some(bar) = bars.get(diff_id) {
                    bar.set_position(bytes);
                }
            }
            Event::Done { diff_id } | Event::Present { diff_id } => {
                if let Some(bar) = bars.remove(diff_id) {
                    bar.finish_and_clear();
                }
                let _ = multi.println(format!("layer {}: done", short(diff_id)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_tag_not_the_port() {
        assert_eq!(
            split_name("localhost:5000/a/b:1"),
            ("localhost:5000/a/b", "1")
        );
        assert_eq!(
            split_name("localhost:5000/a/b"),
            ("localhost:5000/a/b", "<none>")
        );
        assert_eq!(split_name("busybox:latest"), ("busybox", "latest"));
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1_500_000), "1.5 MB");
    }
}

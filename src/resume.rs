//! Continuing an interrupted run: finished stages are skipped, the running one continues from
//! its newest valid checkpoint. A resume whose training settings differ from the run's is
//! refused with the differing keys unless forced (and then recorded in the manifest); so is a
//! `config.toml` edited by hand since the run recorded its configuration. So is a resume that
//! would split the batches into another number of shards (processes x threads) than the run.
//! In a job of several ranks, rank 0 finds the run and writes; every rank reads it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::bail;

use crate::config::diff::{KeyDiff, diff, diff_values, is_training_relevant};
use crate::config::{self, Resolved};
use crate::dist::{self, Layout};
use crate::environment::Environment;
use crate::plan::checks::MemoryCheck;
use crate::plan::lock::RunLock;
use crate::plan::manifest::{Manifest, ResumeRecord, Status, now};
use crate::plan::run_dir::RunDir;
use crate::plan::{Plan, Planning, RunIndex};
use crate::runner::{self, RunOptions, RunReport};

/// Which run to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeTarget {
    Dir(PathBuf),
    /// The newest unfinished run of the experiment given on the command line.
    Latest,
}

impl ResumeTarget {
    pub fn parse(text: &str) -> Self {
        if text == "latest" {
            Self::Latest
        } else {
            Self::Dir(PathBuf::from(text))
        }
    }
}

/// What the user asked for.
pub struct ResumeRequest {
    pub target: ResumeTarget,
    /// The experiment file given with the resume, if any.
    pub experiment: Option<PathBuf>,
    pub sets: Vec<String>,
    pub force: bool,
}

/// A resume, checked and planned, nothing written yet.
pub struct Prepared {
    pub plan: Plan,
    pub run: RunDir,
    pub manifest: Manifest,
    /// Every key that differs from the run's configuration.
    pub changes: Vec<KeyDiff>,
}

/// The newest run of `name` in `index` that has not finished. A damaged newest run is an
/// error rather than silently passed over.
pub fn latest_unfinished(index: &RunIndex, name: &str) -> anyhow::Result<PathBuf> {
    for run in index.of_experiment(name) {
        match &run.manifest {
            Err(why) => bail!(
                "the newest run of experiment `{name}`, {}, is damaged ({why}); resume an \
                 older run by its folder, or move the damaged one away",
                run.dir.display()
            ),
            Ok(m) if m.status != Status::Finished => return Ok(run.dir.clone()),
            Ok(_) => {}
        }
    }
    bail!(
        "no unfinished run of experiment `{name}` under {}",
        index.runs_dir.display()
    )
}

/// The configuration to resume with, refused when training-relevant keys changed (unless
/// `force`). Returns it with every changed key.
pub fn checked_config(
    saved: &Resolved,
    wanted: Resolved,
    force: bool,
    run_dir: &Path,
) -> anyhow::Result<(Resolved, Vec<KeyDiff>)> {
    let changes = diff(&saved.experiment, &wanted.experiment);
    refuse_relevant(
        &changes,
        force,
        &format!(
            "refusing to resume {}: these training settings differ from the run's config.toml",
            run_dir.display()
        ),
    )?;
    Ok((wanted, changes))
}

fn refuse_relevant(changes: &[KeyDiff], force: bool, what: &str) -> anyhow::Result<()> {
    let relevant: Vec<String> = changes
        .iter()
        .filter(|d| is_training_relevant(&d.key))
        .map(|d| format!("  {d}"))
        .collect();
    if !relevant.is_empty() && !force {
        bail!(
            "{what}:\n{}\nresume without them, start a new run, or pass --force to continue \
             anyway (recorded in the manifest)",
            relevant.join("\n")
        );
    }
    Ok(())
}

/// The run folder a request names.
pub fn target_dir(
    req: &ResumeRequest,
    env: &Environment,
    index: &RunIndex,
) -> anyhow::Result<PathBuf> {
    match (&req.target, &req.experiment) {
        (ResumeTarget::Dir(d), _) => Ok(d.clone()),
        (ResumeTarget::Latest, Some(file)) => {
            let resolved = config::resolve(file, env, &req.sets)?;
            latest_unfinished(index, resolved.name())
        }
        (ResumeTarget::Latest, None) => bail!(
            "--resume latest needs the experiment file: ldm-run EXPERIMENT.toml --resume latest"
        ),
    }
}

/// Checks and plans continuing the run in `dir`; writes nothing.
pub fn prepare(
    req: &ResumeRequest,
    dir: &Path,
    env: &Environment,
    planning: &Planning,
) -> anyhow::Result<Prepared> {
    let (run, manifest, saved) = RunDir::open_existing(dir)?;
    let edited = match &manifest.config {
        Some(recorded) => diff_values(recorded, &saved.experiment_json()),
        None => Vec::new(),
    };
    refuse_relevant(
        &edited,
        req.force,
        &format!(
            "refusing to resume {}: its config.toml was edited after the run recorded its \
             configuration, and these training settings differ",
            run.root.display()
        ),
    )?;
    let wanted = config::resolve(
        req.experiment.as_deref().unwrap_or(&run.config()),
        env,
        &req.sets,
    )?;
    let (resolved, mut changes) = checked_config(&saved, wanted, req.force, &run.root)?;
    changes.extend(edited);
    let plan = Plan::resume(resolved, &run.root, &manifest, planning)?;
    if manifest.config.is_none() && !req.force {
        let moved: Vec<&str> = plan
            .stages
            .iter()
            .filter(|s| {
                manifest
                    .stages
                    .get(&s.name)
                    .and_then(|r| r.fingerprint.as_deref())
                    .is_some_and(|f| f != s.fingerprint)
            })
            .map(|s| s.name.as_str())
            .collect();
        if !moved.is_empty() {
            bail!(
                "refusing to resume {}: the fingerprints of stages {} no longer match the run's \
                 (its config.toml or a file it names changed); start a new run, or pass --force",
                run.root.display(),
                moved.join(", ")
            );
        }
    }
    Ok(Prepared {
        plan,
        run,
        manifest,
        changes,
    })
}

/// Continues the run the request names.
pub fn resume(
    req: &ResumeRequest,
    env: &Environment,
    opts: &RunOptions,
    stop: &AtomicBool,
) -> anyhow::Result<RunReport> {
    let index = RunIndex::scan(&opts.runs_dir);
    let dir = if dist::writes() {
        target_dir(req, env, &index)?
    } else {
        PathBuf::new()
    };
    let dir = runner::same_path(&dir)?;
    if !dir.join("manifest.json").is_file() {
        bail!(
            "{} is not an ldm-run run folder (it has no manifest.json)",
            dir.display()
        );
    }
    let mut lock = if dist::writes() {
        Some(RunLock::acquire(&dir)?)
    } else {
        None
    };
    let planning = Planning {
        index: &index,
        reuse: opts.reuse,
        memory: MemoryCheck::Refuse,
    };
    let Prepared {
        plan,
        run,
        mut manifest,
        changes,
    } = prepare(req, &dir, env, &planning)?;
    if manifest.status == Status::Finished {
        eprintln!(
            "{} has finished already; nothing to resume",
            run.root.display()
        );
        return Ok(RunReport {
            dir: run.root.clone(),
            status: Status::Finished,
        });
    }
    runner::check_splittable(&plan)?;
    let device = runner::open_device(&plan)?;
    let layout = crate::parallel::layout(&device);
    let relaid = checked_layout(manifest.layout, layout, req.force, &run.root)?;
    if let Some(lock) = lock.as_mut() {
        lock.claim()?;
    }
    // Every rank has read the run before rank 0 changes it.
    dist::barrier();
    if !changes.is_empty() && dist::writes() {
        run.write("config.toml", &plan.resolved.to_toml())?;
    }
    let forced = req.force
        && (changes.iter().any(|d| is_training_relevant(&d.key))
            || relaid
                .as_ref()
                .is_some_and(|(was, _)| was.total() != layout.total()));
    let mut changed: Vec<String> = changes.iter().map(ToString::to_string).collect();
    changed.extend(relaid.map(|(was, now)| format!("layout: {was} -> {now}")));
    manifest.resumes.push(ResumeRecord {
        at: now(),
        from_status: manifest.status,
        forced,
        changed,
    });
    manifest.status = Status::Running;
    manifest.finished = None;
    manifest.config = Some(plan.resolved.experiment_json());
    manifest.layout = Some(layout);
    runner::record(&manifest, &run)?;
    eprintln!("resuming {}", run.root.display());
    runner::announce(&plan);
    runner::execute(&plan, &run, &mut manifest, opts, &device, stop)
}

/// The run's layout and this resume's when they differ. Another total shard count changes the
/// numbers of every step from here on: refused unless `force`.
pub fn checked_layout(
    recorded: Option<Layout>,
    now: Layout,
    force: bool,
    run_dir: &Path,
) -> anyhow::Result<Option<(Layout, Layout)>> {
    let Some(was) = recorded.filter(|was| *was != now) else {
        return Ok(None);
    };
    if was.total() != now.total() && !force {
        bail!(
            "refusing to resume {}: the run split each batch into {was}, this resume would split              it into {now}, which changes the numbers of every step from here on; resume with              {} process(es) of {} thread(s) each (mpirun -np N, RAYON_NUM_THREADS), start a new              run, or pass --force to continue anyway (recorded in the manifest)",
            run_dir.display(),
            was.world_size,
            was.shards_per_rank
        );
    }
    Ok(Some((was, now)))
}

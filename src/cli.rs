//! Command-line arguments, parsed raw by clap, then dispatched to [`crate::commands`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::device::DeviceSpec;
use crate::diffusion::samplers::{SamplerKind, Sigmas, Spacing};
use crate::environment::Environment;
use crate::resume::{ResumeRequest, ResumeTarget};

#[derive(Debug, Parser)]
#[command(
    name = "ldm-run",
    version,
    about = "Train latent diffusion models from declarative TOML experiment files",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Running experiments (the default command).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment files to run, in order (quoted glob patterns such as 'experiments/*.toml' work).
    #[arg(required_unless_present = "resume", value_name = "EXPERIMENT.toml")]
    pub experiments: Vec<String>,
    /// Continue an interrupted run: its folder, or `latest` (the newest unfinished run of the
    /// experiment given).
    #[arg(long, value_name = "RUN_DIR|latest")]
    pub resume: Option<String>,
    /// Resume even when training settings differ from the run's (recorded in the manifest).
    #[arg(long, requires = "resume")]
    pub force: bool,
    /// Train every stage, even when a finished stage (or run) with the same fingerprint exists.
    #[arg(long)]
    pub no_reuse: bool,
    /// Run only the sweep member (or experiment) with this name, e.g. mnist_kl_f4-lr0.0002.
    #[arg(long, value_name = "NAME", conflicts_with = "resume")]
    pub member: Option<String>,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Settings shared by the commands that read experiments.
#[derive(Debug, Args)]
pub struct Overrides {
    /// Override one key, value parsed as TOML: --set stages.vae.lr=1e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Folder that holds the runs.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Device, shorthand for --set experiment.device=...: cpu, cuda, cuda:1.
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

impl Overrides {
    fn all_sets(&self) -> Vec<String> {
        let mut sets = self.sets.clone();
        if let Some(d) = &self.device {
            sets.push(format!("experiment.device={d}"));
        }
        sets
    }
}

impl RunArgs {
    /// The experiments this invocation names, as a request.
    fn request(&self) -> commands::run::Request {
        commands::run::Request {
            patterns: self.experiments.clone(),
            sets: self.overrides.all_sets(),
            runs_dir: self.overrides.runs_dir.clone(),
            reuse: !self.no_reuse,
            member: self.member.clone(),
        }
    }

    /// The resume this invocation asks for, if any.
    fn resume_request(&self) -> anyhow::Result<Option<ResumeRequest>> {
        let Some(target) = &self.resume else {
            return Ok(None);
        };
        let experiment = match self.experiments.as_slice() {
            [] => None,
            [one] => Some(PathBuf::from(one)),
            _ => anyhow::bail!("--resume continues one run: give at most one experiment file"),
        };
        Ok(Some(ResumeRequest {
            target: ResumeTarget::parse(target),
            experiment,
            sets: self.overrides.all_sets(),
            force: self.force,
        }))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print what `ldm-run` with the same arguments would do: the resolved configuration,
    /// every stage's action, the model sizes and memory; checks everything, runs nothing.
    Plan {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Print the JSON Schema of experiment files.
    Schema,
    /// List the runs under a runs folder with their status, steps and final metrics.
    Ls {
        #[arg(default_value = "runs", value_name = "RUNS_DIR")]
        runs_dir: PathBuf,
        /// Metric columns, by name (`accuracy`, `test/psnr`) or full key (`eval/frechet`);
        /// default: accuracy, frechet, kid, test/psnr, best_step.
        #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
        metrics: Vec<String>,
        /// Print JSON instead of a table (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Time the experiment's networks (train steps and a sampling forward), as the PyTorch
    /// reference ../shared/bench/torch_reference.py does.
    Bench {
        #[arg(value_name = "EXPERIMENT.toml")]
        experiment: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
        /// CPU threads (default: the physical cores).
        #[arg(long, value_parser = at_least_one)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 16, value_parser = at_least_one)]
        vae_batch: usize,
        #[arg(long, default_value_t = 64, value_parser = at_least_one)]
        unet_batch: usize,
        /// Context tokens of the cross-attention (default: conditioning.max_tokens).
        #[arg(long, value_parser = at_least_one)]
        tokens: Option<usize>,
        /// Timed steps per figure (the median is printed).
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Leave out a network: vae or unet.
        #[arg(long, value_parser = ["vae", "unet"])]
        skip: Option<String>,
    },
    /// Submit experiments to a cluster as one array job: task i runs experiment (or sweep
    /// member) i with `ldm-run <file> --member <name>` on the shared runs folder.
    Submit {
        /// Experiment files (quoted glob patterns work); sweeps expand to one task per member.
        #[arg(required = true, value_name = "EXPERIMENT.toml")]
        experiments: Vec<String>,
        /// Submit to Slurm with `sbatch` (the only scheduler so far).
        #[arg(long, required = true)]
        slurm: bool,
        /// Slurm partition (default: the cluster's default partition).
        #[arg(long)]
        partition: Option<String>,
        /// Time limit per task: minutes, HH:MM:SS, D-HH:MM:SS...
        #[arg(long, value_parser = crate::slurm::check_time)]
        time: Option<String>,
        /// GPUs per task; the tasks then run with --device cuda (unless --device says otherwise).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        gpus: Option<u32>,
        /// CPUs per task (also the tasks' thread count).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        cpus_per_task: Option<u32>,
        /// MPI ranks per array task on its node (a build with `--features mpi`): each task
        /// then runs `srun --mpi=pmix ldm-run ...`, one data-parallel run over the ranks.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        ntasks_per_node: Option<u32>,
        /// Print the job script and submit nothing (writes nothing).
        #[arg(long)]
        dry_run: bool,
        /// Train every stage in every task, even when a finished stage with the same
        /// fingerprint exists.
        #[arg(long)]
        no_reuse: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Build a data set on this machine.
    Data {
        #[command(subcommand)]
        what: DataCommand,
    },
    /// Sample a grid from a finished run's diffusion stage.
    Sample {
        /// The run folder, e.g. runs/mnist_kl_f4/2026-11-25T10-00-00.
        run_dir: PathBuf,
        /// Prompts: class prompts one word each ("one nine 2 3"); with a caption tokenizer one
        /// per line ("red apple\ngrinning face").
        #[arg(long, conflicts_with = "prompts_file")]
        prompts: Option<String>,
        /// File of prompts: whitespace-separated words for class prompts, one caption per line
        /// for a caption tokenizer.
        #[arg(long, value_name = "FILE")]
        prompts_file: Option<PathBuf>,
        /// Diffusion stage to sample from (needed when the run has several).
        #[arg(long)]
        stage: Option<String>,
        /// Sampler (default: the stage's `sampler`).
        #[arg(long, value_enum)]
        sampler: Option<SamplerKind>,
        /// Noise levels visited (default: the stage's `sampler_steps`).
        #[arg(long)]
        steps: Option<usize>,
        /// DDIM eta, ddim only (0: deterministic).
        #[arg(long, allow_negative_numbers = true)]
        eta: Option<f64>,
        /// Timestep spacing (default: the stage's `spacing`).
        #[arg(long, value_enum)]
        spacing: Option<Spacing>,
        /// Noise levels: the schedule's or Karras' (default: the stage's `sigmas`).
        #[arg(long, value_enum)]
        sigmas: Option<Sigmas>,
        /// Classifier-free guidance scale.
        #[arg(long, allow_negative_numbers = true)]
        guidance: Option<f64>,
        /// Guidance rescale phi in [0, 1] (0: off).
        #[arg(long, allow_negative_numbers = true)]
        guidance_rescale: Option<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Checkpoint of the diffusion stage: `last`, `best` (kept by its `keep_best`) or a
        /// step its rotation kept.
        #[arg(long, default_value = "last", value_name = "last|best|STEP")]
        checkpoint: crate::train::choice::CheckpointChoice,
        /// Output PNG (the prompts go beside it as .txt).
        #[arg(long, value_name = "FILE.png")]
        out: Option<PathBuf>,
    },
}

/// The data sets `ldm-run data` builds.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// The emoji data set: every single-code-point emoji the installed Noto Color Emoji font
    /// draws, captioned with its CLDR name, labelled with its group, with a held-out test split
    /// (Debian packages fonts-noto-color-emoji and unicode-data).
    Emoji(commands::data::EmojiArgs),
}

/// A count given on the command line that must be at least 1.
pub(crate) fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (expected a whole number of at least 1)")),
    }
}

/// Flag values spelled as experiment files spell them.
macro_rules! value_enum {
    ($($t:ty),*) => {$(
        impl clap::ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                &Self::ALL
            }

            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(clap::builder::PossibleValue::new(self.as_str()))
            }
        }
    )*};
}

value_enum!(SamplerKind, Spacing, Sigmas);

/// Parses the command line and runs the command; errors leave through `main`. Running
/// experiments joins the MPI job a launcher started (see [`crate::dist`]).
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Some(Command::Bench { threads, .. }) => *threads,
        _ => None,
    };
    let asked = crate::parallel::Threads::asked(threads);
    // SAFETY: nothing has started a thread or touched candle yet (argument parsing only).
    unsafe { crate::parallel::single_threaded_candle() };
    let session = match cli.command {
        None => Some(crate::dist::Session::join()?),
        Some(_) => None,
    };
    let per_rank = crate::dist::min(asked.per_process(crate::dist::world().local_size));
    crate::parallel::start_pool(per_rank);
    let result = dispatch(cli);
    match session {
        Some(session) => session.end(result),
        None => result,
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let ok = |b: bool| {
        if b {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    match cli.command {
        None => {
            let env = Environment::from_process()?;
            let args = &cli.run;
            let done = match args.resume_request()? {
                Some(req) => {
                    commands::run::resume(&req, &env, &args.overrides.runs_dir, !args.no_reuse)?
                }
                None => commands::run::run(&args.request(), &env)?,
            };
            Ok(ok(done))
        }
        Some(Command::Plan { run }) => {
            let env = Environment::from_process()?;
            commands::print_out(&commands::plan::for_args(
                &run.request(),
                run.resume_request()?.as_ref(),
                &env,
            )?)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Bench {
            experiment,
            overrides,
            threads: _,
            vae_batch,
            unet_batch,
            tokens,
            steps,
            warmup,
            skip,
        }) => {
            let env = Environment::from_process()?;
            let resolved = crate::config::resolve(&experiment, &env, &overrides.all_sets())?;
            let device = resolved.experiment.experiment.device.open()?;
            let args = commands::bench::BenchArgs {
                vae_batch,
                unet_batch,
                tokens,
                steps,
                warmup,
                skip_vae: skip.as_deref() == Some("vae"),
                skip_unet: skip.as_deref() == Some("unet"),
            };
            commands::bench::run(&resolved, &args, &device)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Ls {
            runs_dir,
            metrics,
            json,
        }) => {
            let text = commands::ls::text(&runs_dir, &metrics, json)?;
            commands::print_out(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Submit {
            experiments,
            slurm: _,
            partition,
            time,
            gpus,
            cpus_per_task,
            ntasks_per_node,
            dry_run,
            no_reuse,
            overrides,
        }) => {
            let env = Environment::from_process()?;
            commands::submit::run(
                &commands::submit::SubmitArgs {
                    patterns: experiments,
                    sets: overrides.sets,
                    device: overrides.device.map(|d| d.to_string()),
                    runs_dir: overrides.runs_dir,
                    no_reuse,
                    resources: crate::slurm::Resources {
                        partition,
                        time,
                        gpus,
                        cpus_per_task,
                        ntasks_per_node,
                    },
                    dry_run,
                },
                &env,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Data {
            what: DataCommand::Emoji(args),
        }) => {
            commands::print_out(&commands::data::emoji(&args)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Schema) => {
            commands::print_out(&crate::config::json_schema())?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Sample {
            run_dir,
            prompts,
            prompts_file,
            stage,
            sampler,
            steps,
            eta,
            spacing,
            sigmas,
            guidance,
            guidance_rescale,
            seed,
            checkpoint,
            out,
        }) => {
            let args = commands::sample::SampleArgs {
                run_dir,
                prompts,
                prompts_file,
                stage,
                sampler,
                steps,
                eta,
                spacing,
                sigmas,
                guidance,
                guidance_rescale,
                seed,
                checkpoint,
                out,
            };
            let path = commands::sample::run(&args)?;
            commands::print_out(&format!("{}\n", path.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

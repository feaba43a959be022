//! Slurm array job scripts: one task per experiment (or sweep member), each running
//! `ldm-run <file> --member <name>` on a shared runs folder. Pure text building, no I/O; the
//! `submit` command writes the script and hands it to `sbatch`.

use std::fmt::Write;

/// The folder under the runs folder that holds job scripts and task logs.
pub const SLURM_DIR: &str = "slurm";

/// What the job asks Slurm for; `None` leaves the cluster's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub partition: Option<String>,
    pub time: Option<String>,
    pub gpus: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// Processes (MPI ranks) of each array task on its node: with more than one, the task runs
    /// `srun --mpi=pmix ldm-run ...`, one data-parallel run over that many ranks.
    pub ntasks_per_node: Option<u32>,
}

impl Resources {
    /// Whether each array task is one run over several ranks.
    pub fn several_ranks(&self) -> bool {
        self.ntasks_per_node.is_some_and(|n| n > 1)
    }
}

/// One array task: the experiment file (as given, relative to the job's working folder or
/// absolute) and the member of it to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub file: String,
    pub member: String,
}

/// Everything an array job script says.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayJob {
    pub job_name: String,
    /// The `ldm-run` binary the tasks run (absolute).
    pub exe: String,
    /// The folder the tasks run in (absolute): relative experiment paths are read from it.
    pub workdir: String,
    /// The shared runs folder (absolute).
    pub runs_dir: String,
    /// The folder of the task logs (absolute), and the prefix of their names.
    pub log_dir: String,
    pub log_prefix: String,
    /// `--set` arguments, passed on unchanged.
    pub sets: Vec<String>,
    /// `--device` for every task.
    pub device: Option<String>,
    pub no_reuse: bool,
    pub resources: Resources,
    pub tasks: Vec<Task>,
}

/// Characters a shell word (and an `#SBATCH` value) may hold without quoting.
fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c))
}

/// `s` as one POSIX shell word: unchanged when it holds only safe characters, else in single
/// quotes (a `'` inside written as `'\''`).
pub fn shell_quote(s: &str) -> String {
    if is_plain(s) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `s` as the value of an `#SBATCH` option: sbatch splits those lines at blanks, groups with
/// quotes, takes `\` as an escape and `#` as the start of a comment.
fn directive_value(s: &str) -> String {
    if is_plain(s) {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', r"\\").replace('"', "\\\""))
    }
}

/// `dir` as part of a Slurm file name pattern, where `%` starts a replacement (`%%` is one `%`).
fn pattern_literal(dir: &str) -> String {
    dir.replace('%', "%%")
}

/// Refuses values that cannot stand in a one-line script directive.
fn one_line(what: &str, s: &str) -> Result<(), String> {
    if s.chars().any(char::is_control) {
        Err(format!(
            "{what} `{}` holds a control character (a newline?), which a Slurm job script cannot hold",
            s.escape_debug()
        ))
    } else {
        Ok(())
    }
}

/// Checks a `--time` value: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or
/// UNLIMITED/INFINITE, as sbatch takes it.
pub fn check_time(t: &str) -> Result<String, String> {
    let upper = t.to_ascii_uppercase();
    if upper == "UNLIMITED" || upper == "INFINITE" {
        return Ok(t.to_string());
    }
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    let numbers = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let parts: Vec<&str> = rest.split(':').collect();
    let ok = days.is_none_or(numbers) && parts.len() <= 3 && parts.iter().all(|p| numbers(p));
    if ok {
        Ok(t.to_string())
    } else {
        Err(format!(
            "`{t}` is not a Slurm time limit: give minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, \
             D-HH:MM:SS or UNLIMITED (e.g. --time 2:00:00)"
        ))
    }
}

/// The job id in `sbatch --parsable` output (`<id>` or `<id>;<cluster>`).
pub fn parse_job_id(stdout: &str) -> Option<String> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let id = line.split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_string())
}

impl ArrayJob {
    /// The arguments after the binary that task `i` runs with.
    pub fn task_args(&self, i: usize) -> Vec<String> {
        let task = &self.tasks[i];
        let mut args = vec![task.file.clone(), "--member".into(), task.member.clone()];
        args.extend(self.shared_args());
        args
    }

    /// The arguments every task adds after its file and member.
    fn shared_args(&self) -> Vec<String> {
        let mut args = vec!["--runs-dir".to_string(), self.runs_dir.clone()];
        for set in &self.sets {
            args.push("--set".into());
            args.push(set.clone());
        }
        if let Some(device) = &self.device {
            args.push("--device".into());
            args.push(device.clone());
        }
        if self.no_reuse {
            args.push("--no-reuse".into());
        }
        args
    }

    /// The `--output` pattern: one log per array task, `<log_dir>/<prefix>-<job>_<task>.out`.
    pub fn output_pattern(&self) -> String {
        format!(
            "{}/{}-%A_%a.out",
            pattern_literal(self.log_dir.trim_end_matches('/')),
            pattern_literal(&self.log_prefix)
        )
    }

    /// The job script. Errors name a value that cannot be written into one.
    pub fn script(&self) -> Result<String, String> {
        if self.tasks.is_empty() {
            return Err("no experiment to submit".into());
        }
        one_line("the job name", &self.job_name)?;
        one_line("the log folder", &self.log_dir)?;
        one_line("the log name", &self.log_prefix)?;
        let r = &self.resources;
        if let Some(p) = &r.partition {
            one_line("the partition", p)?;
        }
        if let Some(t) = &r.time {
            one_line("the time limit", t)?;
        }
        let mut s = String::from("#!/bin/bash\n");
        let mut directive = |name: &str, value: &str| {
            writeln!(s, "#SBATCH --{name}={}", directive_value(value)).expect("String")
        };
        directive("job-name", &self.job_name);
        directive("array", &format!("0-{}", self.tasks.len() - 1));
        directive("output", &self.output_pattern());
        if let Some(p) = &r.partition {
            directive("partition", p);
        }
        if let Some(t) = &r.time {
            directive("time", t);
        }
        if let Some(g) = r.gpus {
            directive("gpus", &g.to_string());
        }
        if let Some(c) = r.cpus_per_task {
            directive("cpus-per-task", &c.to_string());
        }
        if let Some(n) = r.ntasks_per_node {
            directive("ntasks-per-node", &n.to_string());
        }
        s.push_str(
            "# Written by `ldm-run submit --slurm`: array task i runs experiment i below. The tasks\n\
             # share one runs folder, so a stage several of them need is trained once and reused.\n",
        );
        s.push_str("set -eu\n");
        writeln!(s, "cd {}", shell_quote(&self.workdir)).expect("String");
        if let Some(c) = r.cpus_per_task {
            writeln!(s, "export RAYON_NUM_THREADS={c} CANDLE_NUM_THREADS={c}").expect("String");
        }
        s.push_str("case \"${SLURM_ARRAY_TASK_ID:?submit this script with sbatch}\" in\n");
        for (i, task) in self.tasks.iter().enumerate() {
            writeln!(
                s,
                "  {i}) set -- {} --member {} ;;",
                shell_quote(&task.file),
                shell_quote(&task.member)
            )
            .expect("String");
        }
        s.push_str(
            "  *) echo \"this job has no array task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac\n",
        );
        s.push_str(
            "echo \"array task $SLURM_ARRAY_TASK_ID of job ${SLURM_ARRAY_JOB_ID:-?} on $(hostname): $3\"\n",
        );
        let shared: Vec<String> = self.shared_args().iter().map(|a| shell_quote(a)).collect();
        let launcher = if r.several_ranks() {
            "srun --mpi=pmix "
        } else {
            ""
        };
        writeln!(
            s,
            "exec {launcher}{} \"$@\" {}",
            shell_quote(&self.exe),
            shared.join(" ")
        )
        .expect("String");
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep_job() -> ArrayJob {
        ArrayJob {
            job_name: "smoke_sweep".into(),
            exe: "/opt/ldm/bin/ldm-run".into(),
            workdir: "/home/me/project".into(),
            runs_dir: "/scratch/runs".into(),
            log_dir: "/scratch/runs/slurm".into(),
            log_prefix: "2026-11-26T08-00-00".into(),
            sets: vec!["stages.vae.steps=5".into()],
            device: None,
            no_reuse: false,
            resources: Resources::default(),
            tasks: vec![
                Task {
                    file: "experiments/smoke_sweep.toml".into(),
                    member: "smoke_sweep-lr0.001".into(),
                },
                Task {
                    file: "experiments/smoke_sweep.toml".into(),
                    member: "smoke_sweep-lr0.002".into(),
                },
            ],
        }
    }

    #[test]
    fn two_member_sweep_script() {
        let expected = r#"#!/bin/bash
#SBATCH --job-name=smoke_sweep
#SBATCH --array=0-1
#SBATCH --output=/scratch/runs/slurm/2026-11-26T08-00-00-%A_%a.out
# Written by `ldm-run submit --slurm`: array task i runs experiment i below. The tasks
# share one runs folder, so a stage several of them need is trained once and reused.
set -eu
cd /home/me/project
case "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch}" in
  0) set -- experiments/smoke_sweep.toml --member smoke_sweep-lr0.001 ;;
  1) set -- experiments/smoke_sweep.toml --member smoke_sweep-lr0.002 ;;
  *) echo "this job has no array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;
esac
echo "array task $SLURM_ARRAY_TASK_ID of job ${SLURM_ARRAY_JOB_ID:-?} on $(hostname): $3"
exec /opt/ldm/bin/ldm-run "$@" --runs-dir /scratch/runs --set stages.vae.steps=5
"#;
        assert_eq!(sweep_job().script().unwrap(), expected);
    }

    #[test]
    fn ranks_per_node_run_under_srun() {
        let mut job = sweep_job();
        job.resources.ntasks_per_node = Some(2);
        let s = job.script().unwrap();
        assert!(s.contains("\n#SBATCH --ntasks-per-node=2\n"), "{s}");
        assert!(
            s.ends_with(
                "\nexec srun --mpi=pmix /opt/ldm/bin/ldm-run \"$@\" --runs-dir /scratch/runs \
                 --set stages.vae.steps=5\n"
            ),
            "{s}"
        );
        job.resources.ntasks_per_node = Some(1);
        let s = job.script().unwrap();
        assert!(s.contains("\n#SBATCH --ntasks-per-node=1\n"), "{s}");
        assert!(s.contains("\nexec /opt/ldm/bin/ldm-run \"$@\""), "{s}");
    }

    #[test]
    fn resources_devices_and_no_reuse() {
        let mut job = sweep_job();
        job.resources = Resources {
            partition: Some("gpu".into()),
            time: Some("1-02:00:00".into()),
            gpus: Some(2),
            cpus_per_task: Some(8),
            ntasks_per_node: None,
        };
        job.device = Some("cuda".into());
        job.no_reuse = true;
        job.sets.clear();
        let s = job.script().unwrap();
        let head: Vec<&str> = s.lines().take(8).collect();
        assert_eq!(
            head,
            [
                "#!/bin/bash",
                "#SBATCH --job-name=smoke_sweep",
                "#SBATCH --array=0-1",
                "#SBATCH --output=/scratch/runs/slurm/2026-11-26T08-00-00-%A_%a.out",
                "#SBATCH --partition=gpu",
                "#SBATCH --time=1-02:00:00",
                "#SBATCH --gpus=2",
                "#SBATCH --cpus-per-task=8",
            ]
        );
        assert!(
            s.contains("\nexport RAYON_NUM_THREADS=8 CANDLE_NUM_THREADS=8\n"),
            "{s}"
        );
        assert!(
            s.ends_with(
                "exec /opt/ldm/bin/ldm-run \"$@\" --runs-dir /scratch/runs --device cuda --no-reuse\n"
            ),
            "{s}"
        );
        assert_eq!(
            job.task_args(1),
            [
                "experiments/smoke_sweep.toml",
                "--member",
                "smoke_sweep-lr0.002",
                "--runs-dir",
                "/scratch/runs",
                "--device",
                "cuda",
                "--no-reuse"
            ]
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("plain-name_1.0/x:y=z"), "plain-name_1.0/x:y=z");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(
            shell_quote("$HOME `x` \"q\" ;&|*?~"),
            "'$HOME `x` \"q\" ;&|*?~'"
        );
        assert_eq!(shell_quote("line\nbreak"), "'line\nbreak'");
    }

    #[test]
    fn odd_characters_are_quoted_in_the_script() {
        let mut job = sweep_job();
        job.job_name = "my \"job\" #1".into();
        job.workdir = "/home/o'neil/my project".into();
        job.exe = "/opt/ldm run/ldm-run".into();
        job.runs_dir = "/scratch/50% runs".into();
        job.log_dir = "/scratch/50% runs/slurm".into();
        job.sets = vec![
            "stages.sample.prompts_file=\"my prompts.txt\"".into(),
            "x=$(rm -rf /)".into(),
        ];
        job.tasks[0].file = "exp's dir/sweep.toml".into();
        let s = job.script().unwrap();
        assert!(
            s.contains("#SBATCH --job-name=\"my \\\"job\\\" #1\"\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "#SBATCH --output=\"/scratch/50%% runs/slurm/2026-11-26T08-00-00-%A_%a.out\"\n"
            ),
            "{s}"
        );
        assert!(s.contains("cd '/home/o'\\''neil/my project'\n"), "{s}");
        assert!(
            s.contains("  0) set -- 'exp'\\''s dir/sweep.toml' --member smoke_sweep-lr0.001 ;;\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "exec '/opt/ldm run/ldm-run' \"$@\" --runs-dir '/scratch/50% runs' \
                 --set 'stages.sample.prompts_file=\"my prompts.txt\"' --set 'x=$(rm -rf /)'\n"
            ),
            "{s}"
        );
    }

    #[test]
    fn directive_values_with_newlines_are_refused() {
        let mut job = sweep_job();
        job.resources.partition = Some("a\nb".into());
        let err = job.script().unwrap_err();
        assert!(err.contains("partition") && err.contains("a\\nb"), "{err}");
        job.resources.partition = None;
        job.tasks.clear();
        assert!(job.script().is_err());
    }

    #[test]
    fn time_limits() {
        for ok in [
            "30",
            "30:00",
            "2:00:00",
            "1-0",
            "1-02:00",
            "1-02:00:00",
            "unlimited",
        ] {
            assert_eq!(check_time(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in ["", "1h", "1:2:3:4", "-1", "1-", "a-1", "1:", "2 hours"] {
            assert!(check_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn job_ids() {
        assert_eq!(parse_job_id("42\n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("\n123;cluster\n").as_deref(), Some("123"));
        assert_eq!(parse_job_id("Submitted batch job 42"), None);
        assert_eq!(parse_job_id(""), None);
    }
}

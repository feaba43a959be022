//! Against a real Slurm: tests/slurm/start.sh brings up munged, slurmctld and slurmd on
//! localhost (unless that cluster is already up), `ldm-run submit --slurm` sends a two-member
//! sweep as one array job, and the runs must show both members finished with the autoencoder
//! they share trained once; with `--features mpi`, `submit --slurm --ntasks-per-node 2` runs
//! one experiment as a job of two MPI ranks that ends with one process's bytes. The daemons a
//! test started are stopped at the end, also when it fails. Needs `apt-get install slurm-wlm
//! munge` (and openmpi-bin for the MPI job; tests/setup.sh installs them); fails without.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{data_dir, repo, text};
use serde_json::Value;

/// Where the test cluster lives (its config, keys, state and logs); short, as munge's socket
/// path must be.
fn cluster_dir() -> PathBuf {
    std::env::var_os("SLURM_TEST_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/ldm-run-slurm"))
}

/// The test cluster; stops the daemons on drop if it started them, and cancels its job.
struct Cluster {
    dir: PathBuf,
    started: bool,
    job: Option<String>,
    /// Held for the whole test: two test runs never share (or stop) one cluster.
    _lock: File,
}

impl Cluster {
    fn up() -> Self {
        let dir = cluster_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let lock = File::create(dir.with_extension("lock")).unwrap();
        lock.lock().unwrap();
        let script = repo().join("tests/slurm/start.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        if out.status.code() == Some(3) {
            panic!(
                "this test needs a real Slurm and munge, which are not installed; install them \
                 with:\n  apt-get install slurm-wlm munge\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            out.status.success(),
            "the test cluster did not come up ({}):\n{}",
            script.display(),
            text(&out)
        );
        let started = String::from_utf8_lossy(&out.stdout).trim() == "started";
        Self {
            dir,
            started,
            job: None,
            _lock: lock,
        }
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }

    /// A Slurm client command aimed at this cluster.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", self.conf());
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.client(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    /// The daemons' last log lines, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for log in ["log/slurmctld.log", "log/slurmd.log"] {
            let path = self.dir.join(log);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", path.display()));
            for l in &lines[lines.len().saturating_sub(20)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(job) = &self.job {
            let _ = self.client("scancel").arg(job).output();
        }
        if self.started {
            let script = repo().join("tests/slurm/stop.sh");
            let _ = Command::new("bash").arg(script).arg(&self.dir).output();
        }
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The task logs and the daemons' logs, for failure messages.
fn context(cluster: &Cluster, slurm_dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(slurm_dir) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "out"))
        {
            out.push_str(&format!(
                "--- {}\n{}\n",
                p.display(),
                std::fs::read_to_string(p).unwrap_or_default()
            ));
        }
    }
    out + &cluster.logs()
}

/// The one run folder of `experiment` under `runs`.
fn only_run(runs: &Path, experiment: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs.join(experiment))
        .unwrap_or_else(|e| panic!("{experiment}: no runs ({e})"))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{experiment}: {dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// `ldm-run submit --slurm <args>` run in `dir` against `cluster`; returns the job id it
/// printed (and the cluster cancels that job if the test fails).
fn submit(cluster: &mut Cluster, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ldm-run"))
        .args(["submit", "--slurm"])
        .args(args)
        .current_dir(dir)
        .env("SLURM_CONF", cluster.conf())
        .env("LDM_DATA_DIR", data_dir())
        .env_remove("RUST_LOG")
        .output()
        .expect("the ldm-run binary runs");
    assert!(out.status.success(), "submit failed: {}", text(&out));
    let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !job.is_empty() && job.chars().all(|c| c.is_ascii_digit()),
        "submit prints the job id: {}",
        text(&out)
    );
    cluster.job = Some(job.clone());
    job
}

/// Waits for every task of `job` to leave the queue (15 minutes at most).
fn wait_for_job(cluster: &Cluster, job: &str, slurm_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let q = cluster.run("squeue", &["-h", "-j", job, "-o", "%i %T %R"]);
        assert!(
            q.status.success(),
            "squeue failed: {}\n{}",
            text(&q),
            context(cluster, slurm_dir)
        );
        let queued = String::from_utf8_lossy(&q.stdout).trim().to_string();
        if queued.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} still queued after 15 minutes:\n{queued}\n{}",
            context(cluster, slurm_dir)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn sweep_runs_as_a_slurm_array_job_sharing_the_autoencoder() {
    let t0 = Instant::now();
    let mut cluster = Cluster::up();
    eprintln!(
        "slurm: cluster in {} {} ({:.1}s)",
        cluster.dir.display(),
        if cluster.started {
            "started"
        } else {
            "already running"
        },
        t0.elapsed().as_secs_f64()
    );

    // Two smoke variants that differ only in the diffusion stage's learning rate, so their
    // autoencoder stages have one fingerprint; tiny step counts keep CI fast.
    let tmp = tempfile::tempdir().unwrap();
    let base = toml::Value::String(repo().join("experiments/smoke.toml").display().to_string());
    std::fs::write(
        tmp.path().join("sweep.toml"),
        format!(
            "extends = {base}\n\n[experiment]\nname = \"slurm_sweep\"\n\n\
             [stages.vae]\nsteps = 10\n\n[stages.ldm]\nsteps = 10\n\n\
             [sweep]\n\"stages.ldm.lr\" = [1e-3, 2e-3]\n"
        ),
    )
    .unwrap();
    let runs = tmp.path().join("runs");
    let slurm_dir = runs.join("slurm");

    // Relative paths on purpose: the tasks must run in the submitting folder.
    let job = submit(
        &mut cluster,
        tmp.path(),
        &[
            "sweep.toml",
            "--runs-dir",
            "runs",
            "--cpus-per-task",
            "1",
            "--time",
            "20",
        ],
    );
    let scripts: Vec<PathBuf> = std::fs::read_dir(&slurm_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sbatch"))
        .collect();
    assert_eq!(scripts.len(), 1, "one saved job script: {scripts:?}");
    let stamp = scripts[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_string();

    wait_for_job(&cluster, &job, &slurm_dir);
    eprintln!(
        "slurm: job {job} done after {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // Slurm's own account of the tasks (no accounting database: scontrol keeps finished jobs
    // for MinJobAge seconds).
    let show = cluster.run("scontrol", &["show", "job", &job]);
    let show_text = String::from_utf8_lossy(&show.stdout).to_string();
    assert!(show.status.success(), "{}", text(&show));
    assert_eq!(
        show_text.matches("JobState=COMPLETED").count(),
        2,
        "both array tasks completed:\n{show_text}\n{}",
        context(&cluster, &slurm_dir)
    );
    assert_eq!(show_text.matches(" ExitCode=0:0").count(), 2, "{show_text}");

    // One log per task, in <runs>/slurm/, named after the script.
    for task in 0..2 {
        let log = slurm_dir.join(format!("{stamp}-{job}_{task}.out"));
        let text = std::fs::read_to_string(&log).unwrap_or_else(|e| {
            panic!(
                "task log {}: {e}\n{}",
                log.display(),
                context(&cluster, &slurm_dir)
            )
        });
        assert!(
            text.contains(&format!("array task {task} of job {job}")),
            "{}:\n{text}",
            log.display()
        );
        assert!(text.contains("run folder: "), "{}:\n{text}", log.display());
    }

    // Both members finished; the autoencoder was trained by one and reused by the other.
    let members = ["slurm_sweep-lr0.001", "slurm_sweep-lr0.002"];
    let dirs: Vec<PathBuf> = members.iter().map(|m| only_run(&runs, m)).collect();
    let manifests: Vec<Value> = dirs
        .iter()
        .map(|d| read_json(&d.join("manifest.json")))
        .collect();
    for (m, name) in manifests.iter().zip(members) {
        let ctx = || format!("{name}: {m:#}\n{}", context(&cluster, &slurm_dir));
        assert_eq!(m["experiment"], name, "{}", ctx());
        assert_eq!(m["status"], "finished", "{}", ctx());
        for stage in ["vae", "ldm", "sample"] {
            assert_eq!(
                m["stages"][stage]["status"],
                "finished",
                "{stage}: {}",
                ctx()
            );
        }
        assert_eq!(m["stages"]["ldm"]["steps_done"], 10, "{}", ctx());
        assert!(
            m["stages"]["ldm"].get("reused_from").is_none(),
            "each member trains its own diffusion stage: {}",
            ctx()
        );
    }
    assert_ne!(
        manifests[0]["stages"]["ldm"]["fingerprint"],
        manifests[1]["stages"]["ldm"]["fingerprint"]
    );
    assert_eq!(
        manifests[0]["stages"]["vae"]["fingerprint"],
        manifests[1]["stages"]["vae"]["fingerprint"]
    );
    let reused: Vec<usize> = (0..2)
        .filter(|&i| manifests[i]["stages"]["vae"].get("reused_from").is_some())
        .collect();
    assert_eq!(
        reused.len(),
        1,
        "the autoencoder is trained exactly once: {:#}\n{:#}\n{}",
        manifests[0],
        manifests[1],
        context(&cluster, &slurm_dir)
    );
    let (user, trainer) = (reused[0], 1 - reused[0]);
    let from = PathBuf::from(
        manifests[user]["stages"]["vae"]["reused_from"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        from.canonicalize().unwrap(),
        dirs[trainer].join("vae").canonicalize().unwrap(),
        "reused from the other member's run"
    );
    assert_eq!(manifests[trainer]["stages"]["vae"]["steps_done"], 10);
    for dir in &dirs {
        assert!(
            dir.join("sample/samples/final.png").is_file(),
            "{}",
            dir.display()
        );
    }
    eprintln!("slurm: test took {:.1}s", t0.elapsed().as_secs_f64());
}

/// `submit --slurm --ntasks-per-node 2`: one job of two tasks, the two MPI ranks of one run
/// (`srun --mpi=pmix`), which ends with the bytes of one process of two threads.
#[cfg(feature = "mpi")]
#[test]
fn two_task_mpi_job_gives_the_bytes_of_one_process() {
    let t0 = Instant::now();
    let mut cluster = Cluster::up();
    let tmp = tempfile::tempdir().unwrap();
    let smoke = repo().join("experiments/smoke.toml");
    let smoke = smoke.to_str().unwrap();
    let sets = [
        "--set",
        "stages.vae.steps=6",
        "--set",
        "stages.ldm.steps=6",
        "--set",
        "stages.clf.steps=2",
        "--set",
        "stages.eval.samples=16",
    ];
    let files = [
        "vae/checkpoints/step-00000006.safetensors",
        "ldm/checkpoints/step-00000006.safetensors",
        "sample/samples/final.png",
        "eval/metrics.json",
    ];

    let one = tmp.path().join("one");
    let out = Command::new(env!("CARGO_BIN_EXE_ldm-run"))
        .args([smoke, "--runs-dir", one.to_str().unwrap()])
        .args(sets)
        .current_dir(tmp.path())
        .env("LDM_DATA_DIR", data_dir())
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let one = only_run(&one, "smoke");

    let mut args = vec![
        smoke,
        "--runs-dir",
        "runs",
        "--ntasks-per-node",
        "2",
        "--cpus-per-task",
        "1",
        "--time",
        "20",
    ];
    args.extend(sets);
    let job = submit(&mut cluster, tmp.path(), &args);
    let slurm_dir = tmp.path().join("runs/slurm");
    wait_for_job(&cluster, &job, &slurm_dir);
    eprintln!(
        "slurm: MPI job {job} done after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let show = cluster.run("scontrol", &["show", "job", &job]);
    let show_text = String::from_utf8_lossy(&show.stdout).to_string();
    assert!(
        show_text.contains("JobState=COMPLETED") && show_text.contains(" ExitCode=0:0"),
        "{show_text}\n{}",
        context(&cluster, &slurm_dir)
    );
    assert!(show_text.contains("NumTasks=2"), "{show_text}");

    let run = only_run(&tmp.path().join("runs"), "smoke");
    let m = read_json(&run.join("manifest.json"));
    assert_eq!(m["status"], "finished", "{m:#}");
    assert_eq!(
        m["layout"],
        serde_json::json!({"world_size": 2, "shards_per_rank": 1})
    );
    for file in files {
        let got = common::comparable_bytes(&run, file);
        let want = common::comparable_bytes(&one, file);
        assert!(got == want, "{file} differs from one process's");
    }
    let log = context(&cluster, &slurm_dir);
    assert_eq!(
        log.matches("run folder: ").count(),
        1,
        "rank 0 alone: {log}"
    );
}

//! One run over several processes (`--features mpi`, Open MPI's `mpirun`): two ranks of one
//! thread end with the bytes of one process of two threads, rank 1 writes nothing, `ls` sees
//! one run, and a job killed (SIGKILL on rank 0) or stopped (SIGTERM on rank 1) mid-stage
//! resumes under `mpirun` to the same bytes; 2 ranks x 2 threads give the bytes of 1 x 4; a
//! diffusion stage that judges its samples while it trains logs the curves of one process.
//! Built with `--features mpi` (README's test command); needs `apt-get install openmpi-bin
//! libopenmpi-dev libclang-dev strace`, which tests/setup.sh installs. Without `mpirun` on PATH
//! the tests print why and pass without running.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{data_dir, ldm_run, repo, text, wait_for};

/// Short stages with checkpoints every 4 steps, the same for every run of this file.
const SETTINGS: &[&str] = &[
    "--set",
    "stages.vae.steps=8",
    "--set",
    "stages.vae.checkpoint_every=4",
    "--set",
    "stages.ldm.steps=8",
    "--set",
    "stages.ldm.checkpoint_every=4",
    "--set",
    "logging.sample_every=8",
    "--set",
    "stages.clf.steps=4",
    "--set",
    "stages.eval.samples=32",
];

/// [`SETTINGS`] of the autoencoder and diffusion stages alone (see [`two_stages`]).
const TWO_STAGE_SETTINGS: &[&str] = SETTINGS.split_at(10).0;

/// The files whose bytes must agree between runs.
const FINAL: &[&str] = &[
    "vae/checkpoints/step-00000008.safetensors",
    "ldm/checkpoints/step-00000008.safetensors",
    "ldm/tokenizer.json",
    "sample/samples/final.png",
    "clf/checkpoints/step-00000004.safetensors",
    "eval/metrics.json",
    "eval/samples/final.png",
];

/// The ldm-run command line of one rank: the smoke experiment with [`SETTINGS`] into `runs`.
fn args(runs: &Path) -> Vec<&str> {
    let mut a = vec![EXE, "experiments/smoke.toml", "--runs-dir"];
    a.push(runs.to_str().unwrap());
    a.extend_from_slice(SETTINGS);
    a
}

/// `mpirun`'s arguments for two ranks running [`args`].
fn two_ranks(runs: &Path) -> Vec<&str> {
    let mut line = vec!["-np", "2"];
    line.extend(args(runs));
    line
}

const EXE: &str = env!("CARGO_BIN_EXE_ldm-run");

/// `mpirun` with `threads` threads per rank, running `args` (an MPMD line may hold `:`).
fn mpirun(threads: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe"])
        .args(args)
        .current_dir(repo())
        .env("LDM_DATA_DIR", data_dir())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env_remove("RUST_LOG");
    cmd
}

/// Whether `mpirun` is missing from PATH (said on stderr, for the test to return early).
fn no_mpirun() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("mpirun").is_file()));
    if !found {
        eprintln!(
            "skipped: `mpirun` is not on PATH (apt-get install openmpi-bin, or tests/setup.sh)"
        );
    }
    !found
}

fn output(mut cmd: Command) -> Output {
    cmd.output()
        .expect("mpirun runs (apt-get install openmpi-bin)")
}

/// One process of `threads` threads, to its end; returns its run folder.
fn one_process(threads: usize, runs: &Path, file: &str, settings: &[&str]) -> PathBuf {
    let out = Command::new(EXE)
        .args([file, "--runs-dir", runs.to_str().unwrap()])
        .args(settings)
        .current_dir(repo())
        .env("LDM_DATA_DIR", data_dir())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    only_run(runs)
}

fn only_run(runs: &Path) -> PathBuf {
    let experiments: Vec<PathBuf> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with(".locks"))
        .collect();
    assert_eq!(experiments.len(), 1, "{experiments:?}");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&experiments[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "one run folder: {dirs:?}");
    dirs[0].clone()
}

fn bytes(run: &Path, files: &[&str]) -> Vec<Vec<u8>> {
    files
        .iter()
        .map(|f| common::comparable_bytes(run, f))
        .collect()
}

fn assert_same(run: &Path, want: &[Vec<u8>], files: &[&str], what: &str) {
    for ((file, got), want) in files.iter().zip(bytes(run, files)).zip(want) {
        assert!(&got == want, "{what}: {file} differs from the reference");
    }
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

/// The run folder a running job creates under `runs`.
fn wait_for_run(runs: &Path, child: &mut Child) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir(runs.join("smoke"))
            && let Some(e) = entries.flatten().next()
        {
            return e.path();
        }
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a job of two ranks into `runs` and waits for its run folder and for the step-4
/// checkpoint of `stage`.
fn two_ranks_until(runs: &Path, stage: &str) -> (Child, PathBuf) {
    let mut job = mpirun(1, &two_ranks(runs))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = wait_for_run(runs, &mut job);
    let checkpoint = format!("{stage}/checkpoints/step-00000004.safetensors");
    wait_for(&run.join(checkpoint), &mut job);
    (job, run)
}

/// The pid of rank `rank` among the processes `mpirun` (pid `launcher`) started.
fn rank_pid(launcher: u32, rank: usize) -> u32 {
    let start = Instant::now();
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let parent = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
            if parent == Some(launcher)
                && environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes())
            {
                return pid;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no rank {rank}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Paths under `root` that the traced process opened to write, created, renamed, linked,
/// truncated or removed; and how many it opened to read (to show the trace saw it work).
fn writes_under(trace: &str, root: &Path) -> (Vec<String>, usize) {
    let root = root.to_str().unwrap();
    let (mut writes, mut reads) = (Vec::new(), 0);
    for line in trace.lines().filter(|l| l.contains(root)) {
        let call = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.split('(').next())
            .unwrap_or("");
        let opens = matches!(call, "open" | "openat" | "openat2");
        let writing = ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
            .iter()
            .any(|f| line.contains(f));
        if opens && !writing {
            reads += 1;
        } else {
            writes.push(line.to_string());
        }
    }
    (writes, reads)
}

#[test]
fn two_ranks_give_one_process_bytes_write_once_and_resume_after_kills() {
    if no_mpirun() {
        return;
    }
    let t0 = Instant::now();
    let reference = tempfile::tempdir().unwrap();
    let want = bytes(
        &one_process(2, reference.path(), "experiments/smoke.toml", SETTINGS),
        FINAL,
    );
    eprintln!("mpi: reference in {:.0}s", t0.elapsed().as_secs_f64());

    // Two ranks of one thread, rank 1 under strace.
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let trace = tmp.path().join("rank1.trace");
    let mut line = vec!["-np", "1"];
    line.extend(args(&runs));
    line.extend([
        ":",
        "-np",
        "1",
        "strace",
        "-f",
        "-qq",
        "-e",
        "trace=open,openat,openat2,creat,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,\
         symlink,symlinkat,unlink,unlinkat,rmdir,truncate,ftruncate",
        "-o",
    ]);
    line.push(trace.to_str().unwrap());
    line.extend(args(&runs));
    let out = output(mpirun(1, &line));
    assert!(out.status.success(), "{}", text(&out));
    let run = only_run(&runs);
    assert_same(&run, &want, FINAL, "2 ranks x 1 thread");
    let m = manifest(&run);
    assert_eq!(m["status"], "finished");
    assert_eq!(
        m["layout"],
        serde_json::json!({"world_size": 2, "shards_per_rank": 1})
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("run folder: ").count(),
        1,
        "rank 0 alone says it: {err}"
    );
    assert!(!err.contains("rank 1"), "rank 1 printed: {err}");
    assert_eq!(
        err.matches("job: 2 shards (2 processes x 1); gradients summed over MPI")
            .count(),
        1,
        "rank 0 names the job's layout and transport once: {err}"
    );
    let (writes, reads) = writes_under(&std::fs::read_to_string(&trace).unwrap(), &runs);
    assert!(writes.is_empty(), "rank 1 wrote:\n{}", writes.join("\n"));
    assert!(reads > 0, "the trace shows rank 1 reading the run's files");
    let ls = ldm_run(&repo(), &["ls", runs.to_str().unwrap(), "--json"]);
    assert!(ls.status.success(), "{}", text(&ls));
    let rows: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows:#}");
    eprintln!("mpi: 2 ranks in {:.0}s", t0.elapsed().as_secs_f64());

    // SIGKILL on rank 0 in the diffusion stage: MPI ends the job; the newest checkpoint
    // stays valid and the resumed job ends with the same bytes.
    let tmp = tempfile::tempdir().unwrap();
    let (job, run) = two_ranks_until(&tmp.path().join("runs"), "ldm");
    signal(rank_pid(job.id(), 0), "-KILL");
    let out = job.wait_with_output().unwrap();
    assert!(!out.status.success(), "a killed job fails");
    assert_eq!(manifest(&run)["stages"]["ldm"]["status"], "running");
    let resume = ["-np", "2", EXE, "--resume", run.to_str().unwrap()];
    let out = output(mpirun(1, &resume));
    assert!(out.status.success(), "{}", text(&out));
    assert_same(&run, &want, FINAL, "killed and resumed");
    assert_eq!(manifest(&run)["status"], "finished");
    eprintln!(
        "mpi: killed and resumed in {:.0}s",
        t0.elapsed().as_secs_f64()
    );

    // SIGTERM on rank 1 alone in the autoencoder stage: both ranks stop at one step, rank 0
    // checkpoints it, the job fails, and the resume ends with the same bytes.
    let tmp = tempfile::tempdir().unwrap();
    let (job, run) = two_ranks_until(&tmp.path().join("runs"), "vae");
    signal(rank_pid(job.id(), 1), "-TERM");
    let out = job.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("ldm-run --resume {}", run.display())),
        "{err}"
    );
    let m = manifest(&run);
    assert_eq!(m["stages"]["vae"]["status"], "interrupted", "{m:#}");
    let at = m["stages"]["vae"]["steps_done"].as_u64().unwrap();
    assert!((4..8).contains(&at), "stopped at step {at}");
    assert!(
        run.join(format!("vae/checkpoints/step-{at:08}.safetensors"))
            .is_file(),
        "rank 0 checkpointed the step the ranks agreed on"
    );

    // A resume that would split batches into 1 shard instead of 2 is refused, and changes
    // nothing; one process of two threads (2 shards too) continues to the same bytes.
    let before = std::fs::read(run.join("manifest.json")).unwrap();
    let resume_with = |threads: usize| {
        Command::new(EXE)
            .args(["--resume", run.to_str().unwrap()])
            .current_dir(repo())
            .env("LDM_DATA_DIR", data_dir())
            .env("RAYON_NUM_THREADS", threads.to_string())
            .output()
            .unwrap()
    };
    let refused = resume_with(1);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("2 shards (2 processes x 1)")
            && err.contains("1 shard (1 process x 1)")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("manifest.json")).unwrap(), before);
    let out = resume_with(2);
    assert!(out.status.success(), "{}", text(&out));
    assert_same(&run, &want, FINAL, "stopped and resumed by one process");
    let m = manifest(&run);
    assert_eq!(
        m["resumes"][0]["changed"],
        serde_json::json!(["layout: 2 shards (2 processes x 1) -> 2 shards (1 process x 2)"])
    );
    eprintln!(
        "mpi: stopped and resumed in {:.0}s",
        t0.elapsed().as_secs_f64()
    );
}

/// The smoke experiment with only the stages `keep`, in `dir`.
fn stages_of(dir: &Path, keep: &[&str]) -> PathBuf {
    let smoke = std::fs::read_to_string(repo().join("experiments/smoke.toml")).unwrap();
    let mut doc: toml::Table = toml::from_str(&smoke).unwrap();
    let stages = doc["stages"].as_table_mut().unwrap();
    stages.retain(|name, _| keep.contains(&name));
    let prompts = repo().join("experiments/sample_prompts.txt");
    stages["ldm"]["prompts_file"] = toml::Value::String(prompts.display().to_string());
    let path = dir.join("stages.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

/// The smoke experiment's autoencoder and diffusion stages alone, in `dir`.
fn two_stages(dir: &Path) -> PathBuf {
    stages_of(dir, &["vae", "ldm"])
}

/// `mpirun -np 2` of `file` with `settings` into `runs`, `threads` per rank; returns the run.
fn two_ranks_of(threads: usize, file: &Path, runs: &Path, settings: &[&str]) -> PathBuf {
    let mut line = vec![
        "-np",
        "2",
        EXE,
        file.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
    ];
    line.extend_from_slice(settings);
    let out = output(mpirun(threads, &line));
    assert!(out.status.success(), "{}", text(&out));
    only_run(runs)
}

#[test]
fn two_ranks_of_two_threads_give_the_bits_of_one_process_of_four() {
    if no_mpirun() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = two_stages(tmp.path());
    let files = &FINAL[..3];
    let one = one_process(
        4,
        &tmp.path().join("one"),
        file.to_str().unwrap(),
        TWO_STAGE_SETTINGS,
    );
    let want = bytes(&one, files);
    let run = two_ranks_of(2, &file, &tmp.path().join("two"), TWO_STAGE_SETTINGS);
    assert_same(&run, &want, files, "2 ranks x 2 threads against 1 x 4");
    assert_eq!(
        manifest(&run)["layout"],
        serde_json::json!({"world_size": 2, "shards_per_rank": 2})
    );
}

/// Two ranks refuse, before anything is written and with their reason, an autoencoder with a
/// patch discriminator (it cannot be split over ranks) and a GPU this build cannot open.
#[test]
fn two_ranks_refuse_bad_inputs_and_write_nothing() {
    if no_mpirun() {
        return;
    }
    let no_cuda = "device cuda:0 asked for, but this ldm-run was built without CUDA";
    let table: &[(&[&str], &[&str])] = &[
        (
            &["--set", "stages.vae.disc_weight=0.5"],
            &[
                "stage `vae` trains a patch discriminator (stages.vae.disc_weight = 0.5)",
                "cannot be split over 2 processes",
                "train it with one process",
                "nothing was run",
            ],
        ),
        (&["--device", "cuda"], &[no_cuda]),
    ];
    for (extra, parts) in table {
        let tmp = tempfile::tempdir().unwrap();
        let runs = tmp.path().join("runs");
        let mut line = two_ranks(&runs);
        line.extend_from_slice(extra);
        let out = output(mpirun(1, &line));
        assert!(!out.status.success(), "{extra:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for part in *parts {
            assert!(err.contains(part), "{extra:?}: {part}: {err}");
        }
        assert!(
            !runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none(),
            "{extra:?}: nothing written under {}",
            runs.display()
        );
    }
}

/// The diffusion stage judges its samples with the classifier stage while it trains (at steps
/// 4 and 8): two ranks of one thread split the held-out set and the judged samples, and log
/// the curves of one process of two threads, point for point, beside its bytes.
#[test]
fn two_ranks_judge_samples_as_one_process_does() {
    if no_mpirun() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = stages_of(tmp.path(), &["vae", "clf", "ldm"]);
    let mut settings: Vec<&str> = SETTINGS[..12].to_vec();
    settings.extend([
        "--set",
        "stages.ldm.needs=[\"vae\", \"clf\"]",
        "--set",
        "stages.ldm.eval_every=4",
        "--set",
        "stages.ldm.held_out_images=16",
        "--set",
        "stages.ldm.judge_samples=16",
        "--set",
        "stages.ldm.keep_best=held_out/frechet",
    ]);
    let files = &FINAL[1..3];
    let tags = [
        "ldm/held_out/loss",
        "ldm/held_out/accuracy",
        "ldm/held_out/frechet",
        "ldm/held_out/kid",
    ];
    let curves = |run: &Path| common::scalar_curves(run, &tags);
    let one = one_process(
        2,
        &tmp.path().join("one"),
        file.to_str().unwrap(),
        &settings,
    );
    let want = curves(&one);
    assert!(
        want.iter().all(|c| c.len() == 2 && c[1].0 == c[0].0 + 4),
        "a point at the stage's steps 4 and 8 on every curve: {want:?}"
    );
    let run = two_ranks_of(1, &file, &tmp.path().join("two"), &settings);
    assert_same(
        &run,
        &bytes(&one, files),
        files,
        "judged, 2 ranks x 1 thread",
    );
    assert_eq!(curves(&run), want, "the judged curves of 2 ranks");
    let best = |run: &Path| manifest(run)["stages"]["ldm"]["metrics"]["best_step"].clone();
    assert!(best(&one).is_number(), "{}", manifest(&one));
    assert_eq!(
        best(&run),
        best(&one),
        "the best step of the judged Frechet distance"
    );
}

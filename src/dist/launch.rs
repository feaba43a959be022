//! Whether a launcher started several copies of this process, from the variables launchers
//! set: so a build or launch that cannot form one MPI world is refused instead of running the
//! whole experiment once per process.

/// What started this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Processes the launcher started.
    pub processes: usize,
    /// The launcher, in words.
    pub by: &'static str,
}

/// Variables holding a launcher's process count, and the launcher that sets each.
const SIZES: &[(&str, &str)] = &[
    ("OMPI_COMM_WORLD_SIZE", "mpirun"),
    ("PMI_SIZE", "an MPI launcher (PMI)"),
    ("SLURM_STEP_NUM_TASKS", "srun"),
];

/// The launcher of this process, when it started more than one.
pub fn detect() -> Option<Launch> {
    detect_from(|name| std::env::var(name).ok())
}

fn detect_from(var: impl Fn(&str) -> Option<String>) -> Option<Launch> {
    SIZES.iter().find_map(|&(name, by)| {
        let processes = var(name)?.trim().parse::<usize>().ok()?;
        (processes > 1).then_some(Launch { processes, by })
    })
}

/// Why `launch` cannot run as one world.
pub fn mismatch(launch: &Launch, built_with_mpi: bool) -> String {
    let why = if built_with_mpi {
        "but MPI sees each as a world of one: the launcher does not speak to this ldm-run's MPI \
         (under Slurm, srun needs the plugin of Debian's Open MPI: srun --mpi=pmix; or start \
         the job with mpirun)"
    } else {
        "but this ldm-run was built without the `mpi` feature: build it with `cargo build \
         --release --features mpi` (Debian: apt-get install libopenmpi-dev openmpi-bin \
         libclang-dev)"
    };
    format!(
        "{} started {} copies of ldm-run, {why}; each copy would run the whole experiment on its \
         own. Nothing was run",
        launch.by, launch.processes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Option<Launch> {
        detect_from(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn launchers_of_several_processes_are_found() {
        assert_eq!(with(&[]), None);
        assert_eq!(with(&[("OMPI_COMM_WORLD_SIZE", "1")]), None);
        assert_eq!(
            with(&[("OMPI_COMM_WORLD_SIZE", "4"), ("SLURM_STEP_NUM_TASKS", "8")]),
            Some(Launch {
                processes: 4,
                by: "mpirun"
            })
        );
        assert_eq!(with(&[("SLURM_STEP_NUM_TASKS", "2")]).unwrap().by, "srun");
        assert_eq!(with(&[("PMI_SIZE", "x")]), None);
        let text = mismatch(&with(&[("SLURM_STEP_NUM_TASKS", "2")]).unwrap(), false);
        assert!(text.contains("srun started 2 copies"), "{text}");
        assert!(text.contains("--features mpi"), "{text}");
        assert!(mismatch(&with(&[("PMI_SIZE", "3")]).unwrap(), true).contains("--mpi=pmix"));
    }
}

//! `ldm-run plan`: what `ldm-run` with the same arguments would do, without doing it: the
//! resolved configuration, every stage in execution order with its action (as the run will
//! take it), the parameter count of every model and each stage's memory estimate. Every check
//! a run makes before writing is made here too; nothing is written.

use std::fmt::Write;

use crate::environment::Environment;
use crate::plan::action::Shown;
use crate::plan::checks::{self, MemoryCheck};
use crate::plan::{Plan, Planning, RunAction, RunIndex, memory, params};
use crate::resume::{self, ResumeRequest};

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The stage lines of a plan: name, kind, what it needs, and its action.
pub fn stage_lines(plan: &Plan) -> Vec<String> {
    let width = plan.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
    plan.stages
        .iter()
        .map(|s| {
            let needs = if s.needs.is_empty() {
                "-".to_string()
            } else {
                s.needs.join(",")
            };
            format!(
                "stage {:width$}  {:11}  needs: {:10}  {}",
                s.name,
                s.task.kind().as_str(),
                needs,
                Shown {
                    action: &s.action,
                    steps: s.steps()
                }
            )
        })
        .collect()
}

/// The report of one plan; `config` prints its whole resolved configuration.
pub fn report(plan: &Plan, config: bool) -> anyhow::Result<String> {
    let mut out = String::new();
    let r = &plan.resolved;
    match &r.member {
        Some(values) => writeln!(out, "# experiment {} ({values})", plan.name())?,
        None => writeln!(out, "# experiment {}", plan.name())?,
    }
    if config {
        writeln!(out, "# resolved configuration of {}", r.path.display())?;
        out.push_str(&r.to_toml());
        out.push('\n');
    }
    match &plan.run {
        RunAction::New => writeln!(
            out,
            "# stages, in execution order, as a run would take them"
        )?,
        RunAction::Finished { dir } => writeln!(
            out,
            "# finished earlier in {} with these very stages: nothing to train",
            dir.display()
        )?,
        RunAction::Resume { dir } => writeln!(
            out,
            "# stages, in execution order, as resuming {} would take them",
            dir.display()
        )?,
    }
    for line in stage_lines(plan) {
        writeln!(out, "{line}")?;
    }
    let e = &r.experiment;
    let classes = crate::data::class_names(&e.dataset).unwrap_or_default();
    let tokenizer = checks::tokenizer(e, &classes).ok();
    let counts = crate::data::counts(&e.dataset).ok();
    for s in &plan.stages {
        for (model, n) in params::trained(e, &s.task, &classes, tokenizer.as_ref()) {
            writeln!(out, "params {}.{model}: {}", s.name, thousands(n))?;
        }
    }
    if let Some(counts) = counts {
        for s in &plan.stages {
            let held = params::held(e, &s.task, &classes, tokenizer.as_ref(), 0);
            writeln!(
                out,
                "memory {}: {}",
                s.name,
                memory::estimate(e, &s.task, held, &counts)
            )?;
        }
    }
    Ok(out)
}

/// The report of every plan of a command.
pub fn reports(plans: &[Plan]) -> anyhow::Result<String> {
    let mut out = String::new();
    let whole = plans.len() == 1;
    for (i, plan) in plans.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&report(plan, whole)?);
    }
    if !whole {
        writeln!(
            out,
            "\n# {} experiments; `ldm-run plan FILE --member NAME` prints one's whole configuration",
            plans.len()
        )?;
    }
    Ok(out)
}

/// The report of `ldm-run plan` with the arguments of a run (`resume`: of `--resume`).
pub fn for_args(
    req: &super::run::Request,
    resume: Option<&ResumeRequest>,
    env: &Environment,
) -> anyhow::Result<String> {
    let index = RunIndex::scan(&req.runs_dir);
    match resume {
        None => reports(&super::run::plans(
            req,
            env,
            &index,
            MemoryCheck::Refuse,
            "nothing was planned",
        )?),
        Some(r) => {
            let dir = resume::target_dir(r, env, &index)?;
            let planning = Planning {
                index: &index,
                reuse: req.reuse,
                memory: MemoryCheck::Refuse,
            };
            report(&resume::prepare(r, &dir, env, &planning)?.plan, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(16_747_237), "16,747,237");
    }
}

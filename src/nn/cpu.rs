//! The CPU this process runs on: its model, and the instruction set the hand-written kernels
//! use, chosen once at run time so one binary runs on every x86-64 (and aarch64) machine.
//!
//! `LDM_CPU_ISA=avx2` or `=baseline` makes the kernels use a lower instruction set than the
//! CPU has (to compare the paths, and to test each of them on one machine); it cannot raise
//! it. The `gemm` crate picks its own matrix-product kernels by the same rule (AVX-512 where
//! the CPU has AVX512F, else AVX2+FMA, else scalar) and ignores the variable.

use std::sync::OnceLock;

/// An instruction set the kernels are compiled for, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// The target's baseline: SSE2 on x86-64, NEON on aarch64 (what the compiler vectorises
    /// portable code with).
    Baseline,
    /// AVX2, FMA, BMI1 and BMI2 (the vector part of x86-64-v3).
    Avx2,
    /// AVX-512 F, VL, BW and DQ on top of [`Isa::Avx2`] (x86-64-v4).
    Avx512,
}

impl Isa {
    /// Every instruction set, lowest first.
    pub const ALL: [Isa; 3] = [Isa::Baseline, Isa::Avx2, Isa::Avx512];

    /// The name `LDM_CPU_ISA` takes and the bench prints.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The instruction set of that name.
    pub fn parse(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether this CPU runs code compiled for it.
    pub fn available(self) -> bool {
        match self {
            Isa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("bmi1")
                    && std::is_x86_feature_detected!("bmi2")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.available()
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }
}

/// The best instruction set this CPU has.
pub fn detected() -> Isa {
    Isa::ALL
        .into_iter()
        .rev()
        .find(|i| i.available())
        .unwrap_or(Isa::Baseline)
}

/// The kernels' instruction set and, when `LDM_CPU_ISA` asked for something else, why.
struct Choice {
    isa: Isa,
    note: Option<String>,
}

fn choice() -> &'static Choice {
    static CHOICE: OnceLock<Choice> = OnceLock::new();
    CHOICE.get_or_init(|| choose(std::env::var("LDM_CPU_ISA").ok().as_deref(), detected()))
}

/// The instruction set for a request (`LDM_CPU_ISA`) on a CPU whose best is `best`.
fn choose(request: Option<&str>, best: Isa) -> Choice {
    let Some(name) = request.map(str::trim).filter(|n| !n.is_empty()) else {
        return Choice {
            isa: best,
            note: None,
        };
    };
    match Isa::parse(name) {
        Some(isa) if isa <= best => Choice {
            isa,
            note: Some(format!("LDM_CPU_ISA={name}")),
        },
        Some(_) => Choice {
            isa: best,
            note: Some(format!("LDM_CPU_ISA={name} ignored: this CPU lacks it")),
        },
        None => Choice {
            isa: best,
            note: Some(format!(
                "LDM_CPU_ISA={name} ignored: not one of baseline, avx2, avx512"
            )),
        },
    }
}

/// The instruction set the hand-written kernels run: the best the CPU has, or a lower one
/// that `LDM_CPU_ISA` asked for. Code compiled for it is safe to run on this CPU.
#[inline]
pub fn isa() -> Isa {
    choice().isa
}

/// The instruction set of the `gemm` crate's f32 matrix products on this CPU.
pub fn gemm_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            "avx512"
        } else if std::is_x86_feature_detected!("fma") {
            "avx2"
        } else {
            "scalar"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// The CPU's model name (with vendor, family and model on x86-64, which tell e.g. AMD's
/// Zen generations apart), or "unknown CPU".
pub fn cpu_model() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        x86_model()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        proc_cpuinfo_model().unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
    }
}

/// One line for benchmark output: the CPU model and the instruction sets in use.
pub fn summary() -> String {
    let c = choice();
    let mut s = format!(
        "cpu: {}; kernels: {}; gemm: {}",
        cpu_model(),
        c.isa.name(),
        gemm_isa()
    );
    if let Some(note) = &c.note {
        s += &format!(" ({note})");
    }
    s
}

#[cfg(target_arch = "x86_64")]
fn x86_model() -> String {
    use std::arch::x86_64::__cpuid;
    let regs = |leaf: u32| {
        let r = __cpuid(leaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    };
    let bytes = |words: &[u32]| -> String {
        let b: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        String::from_utf8_lossy(&b)
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string()
    };
    let [max, ebx, ecx, edx] = regs(0);
    let vendor = bytes(&[ebx, edx, ecx]);
    let brand = if regs(0x8000_0000)[0] >= 0x8000_0004 {
        let words: Vec<u32> = (0x8000_0002..=0x8000_0004).flat_map(regs).collect();
        bytes(&words)
    } else {
        String::new()
    };
    let brand = if brand.is_empty() {
        "unknown x86-64 CPU".to_string()
    } else {
        brand
    };
    if max < 1 {
        return brand;
    }
    // Family and model as Linux reports them (extended fields added in).
    let sig = regs(1)[0];
    let base_family = (sig >> 8) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((sig >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        ((sig >> 12) & 0xf0) | ((sig >> 4) & 0xf)
    } else {
        (sig >> 4) & 0xf
    };
    format!("{brand} ({vendor} family {family} model {model})")
}

#[cfg(not(target_arch = "x86_64"))]
fn proc_cpuinfo_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        let key = key.trim();
        (key == "model name" || key == "Hardware" || key == "CPU part")
            .then(|| value.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_can_lower_the_instruction_set_but_not_raise_it() {
        let c = choose(None, Isa::Avx512);
        assert_eq!((c.isa, c.note), (Isa::Avx512, None));
        let c = choose(Some("avx2"), Isa::Avx512);
        assert_eq!(c.isa, Isa::Avx2);
        assert_eq!(choose(Some("baseline"), Isa::Avx2).isa, Isa::Baseline);
        let c = choose(Some("avx512"), Isa::Avx2);
        assert_eq!(c.isa, Isa::Avx2);
        assert!(c.note.unwrap().contains("lacks"));
        let c = choose(Some("sse9"), Isa::Baseline);
        assert_eq!(c.isa, Isa::Baseline);
        assert!(c.note.unwrap().contains("not one of"));
        assert_eq!(choose(Some(" "), Isa::Avx2).isa, Isa::Avx2);
    }

    #[test]
    fn the_chosen_instruction_set_runs_here() {
        assert!(isa().available());
        assert!(isa() <= detected());
        for i in Isa::ALL {
            assert_eq!(Isa::parse(i.name()), Some(i));
        }
        assert!(!cpu_model().is_empty());
        assert!(summary().starts_with("cpu: "));
    }

    /// The kernels' own unit tests (and the fused Adam's) ran on the chosen instruction set;
    /// this runs them again in a child process on every lower one this CPU has.
    #[test]
    fn kernel_unit_tests_pass_on_every_instruction_set_of_this_cpu() {
        for i in Isa::ALL.into_iter().filter(|&i| i < isa()) {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .env("LDM_CPU_ISA", i.name())
                .args([
                    "nn::kernels::",
                    "train::adam_fused::",
                    "nn::cpu::tests::the_",
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}: {text}", i.name());
            assert!(text.contains("test result: ok"), "{text}");
            assert!(!text.contains("running 0 tests"), "{text}");
        }
        for i in Isa::ALL.into_iter().filter(|i| !i.available()) {
            println!("skipped {}: this CPU lacks it", i.name());
        }
    }
}

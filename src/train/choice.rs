//! Which checkpoint of a finished training stage a later stage (or `ldm-run sample`) loads:
//! `"last"` (the stage's final weights), `"best"` (the one its `keep_best` kept) or a step
//! number whose checkpoint the rotation keeps.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A checkpoint of a training stage, as later stages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointChoice {
    #[default]
    Last,
    Best,
    Step(u64),
}

const EXPECTED: &str = "\"last\", \"best\" or a step number (e.g. 500)";

impl FromStr for CheckpointChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "last" => Ok(Self::Last),
            "best" => Ok(Self::Best),
            _ => match s.parse::<u64>() {
                Ok(0) => Err("step 0 has no checkpoint; the first is saved after a step".into()),
                Ok(n) => Ok(Self::Step(n)),
                Err(_) => Err(format!("`{s}` names no checkpoint; expected {EXPECTED}")),
            },
        }
    }
}

impl fmt::Display for CheckpointChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Last => write!(f, "last"),
            Self::Best => write!(f, "best"),
            Self::Step(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for CheckpointChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Step(n) => s.serialize_u64(*n),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for CheckpointChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CheckpointChoice;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "step {v} is negative; expected {EXPECTED}"
                    ))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for CheckpointChoice {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CheckpointChoice".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                { "type": "string", "enum": ["last", "best"] },
                { "type": "integer", "minimum": 1 }
            ],
            "description": "`\"last\"`, `\"best\"` (the needed stage's `keep_best`) or a step number."
        })
    }
}

/// The steps at which a stage of `total` steps saving every `every` leaves a checkpoint once
/// the rotation keeps the newest `keep`: what `checkpoint = <step>` may name.
pub fn kept_steps(total: u64, every: u64, keep: usize) -> Vec<u64> {
    let mut saved: Vec<u64> = (1..=total / every.max(1))
        .map(|k| k * every)
        .filter(|&s| s < total)
        .collect();
    saved.push(total);
    saved.sort_unstable_by(|a, b| b.cmp(a));
    saved.truncate(keep.max(1));
    saved.reverse();
    saved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_steps_and_refuses_the_rest() {
        assert_eq!("last".parse(), Ok(CheckpointChoice::Last));
        assert_eq!("best".parse(), Ok(CheckpointChoice::Best));
        assert_eq!("300".parse(), Ok(CheckpointChoice::Step(300)));
        assert!(
            "0".parse::<CheckpointChoice>()
                .unwrap_err()
                .contains("step 0")
        );
        assert!(
            "newest"
                .parse::<CheckpointChoice>()
                .unwrap_err()
                .contains("expected \"last\", \"best\" or a step number")
        );
        let round: CheckpointChoice =
            serde_json::from_value(serde_json::to_value(CheckpointChoice::Step(7)).unwrap())
                .unwrap();
        assert_eq!(round, CheckpointChoice::Step(7));
        let best: CheckpointChoice = serde_json::from_str("\"best\"").unwrap();
        assert_eq!(best, CheckpointChoice::Best);
        assert!(serde_json::from_str::<CheckpointChoice>("-3").is_err());
        assert!(serde_json::from_str::<CheckpointChoice>("1.5").is_err());
    }

    #[test]
    fn kept_steps_follow_the_rotation() {
        assert_eq!(kept_steps(30, 10, 2), [20, 30]);
        assert_eq!(kept_steps(25, 10, 5), [10, 20, 25]);
        assert_eq!(kept_steps(30, 500, 2), [30]);
    }
}

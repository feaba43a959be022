//! Classification accuracy, overall and per class, from predicted and true labels.

use serde::Serialize;

/// How one class fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAccuracy {
    pub class: String,
    /// Items whose true label is this class.
    pub count: usize,
    /// Of those, how many were predicted as this class.
    pub correct: usize,
    /// correct / count; `None` when the class never occurs.
    pub accuracy: Option<f64>,
}

/// Accuracy of a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accuracy {
    pub count: usize,
    pub correct: usize,
    /// correct / count (0 for an empty set).
    pub overall: f64,
    pub per_class: Vec<ClassAccuracy>,
}

impl Accuracy {
    /// Scores `predicted` against `truth` (same length) for the classes `class_names`; a label
    /// outside the classes counts as wrong and is not tabulated per class.
    pub fn of(predicted: &[u32], truth: &[u32], class_names: &[String]) -> Self {
        assert_eq!(
            predicted.len(),
            truth.len(),
            "Accuracy::of: {} predictions for {} labels",
            predicted.len(),
            truth.len()
        );
        let mut per_class: Vec<ClassAccuracy> = class_names
            .iter()
            .map(|c| ClassAccuracy {
                class: c.clone(),
                count: 0,
                correct: 0,
                accuracy: None,
            })
            .collect();
        let mut correct = 0;
        for (&p, &t) in predicted.iter().zip(truth) {
            let hit = p == t;
            correct += usize::from(hit);
            if let Some(row) = per_class.get_mut(t as usize) {
                row.count += 1;
                row.correct += usize::from(hit);
            }
        }
        for row in &mut per_class {
            row.accuracy = (row.count > 0).then(|| row.correct as f64 / row.count as f64);
        }
        let count = truth.len();
        Self {
            count,
            correct,
            overall: if count == 0 {
                0.0
            } else {
                correct as f64 / count as f64
            },
            per_class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_set() {
        let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let truth = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0];
        let predicted = [0, 1, 0, 1, 0, 2, 2, 2, 1, 0];
        let acc = Accuracy::of(&predicted, &truth, &names);
        assert_eq!((acc.count, acc.correct), (10, 7));
        assert!((acc.overall - 0.7).abs() < 1e-12);
        let rows: Vec<(usize, usize, Option<f64>)> = acc
            .per_class
            .iter()
            .map(|r| (r.count, r.correct, r.accuracy))
            .collect();
        assert_eq!(
            rows,
            vec![
                (4, 3, Some(0.75)),
                (2, 1, Some(0.5)),
                (4, 3, Some(0.75)),
                (0, 0, None)
            ]
        );
        assert_eq!(acc.per_class[3].class, "d");
    }

    #[test]
    fn empty_and_out_of_range() {
        let names = vec!["x".to_string()];
        let empty = Accuracy::of(&[], &[], &names);
        assert_eq!((empty.count, empty.overall), (0, 0.0));
        // Label 5 is not a class: it counts overall but has no row.
        let acc = Accuracy::of(&[5, 0], &[5, 0], &names);
        assert_eq!((acc.correct, acc.per_class[0].count), (2, 1));
    }
}

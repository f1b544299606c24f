//! Grouping quality on a corpus of log messages of many systems with known templates
//! (`grouping/corpus.txt`), measured as Grouping Accuracy: a message is grouped correctly
//! when the set of messages sharing its fingerprint is exactly the set sharing its true
//! template. The target is an average of at least 0.93 over the systems, with the
//! default configuration.

#[path = "grouping/corpus.rs"]
mod corpus;

use std::collections::HashMap;

use vigil_engine::Grouper;

/// Grouping Accuracy of `predicted` (a group per message) against `truth`.
fn grouping_accuracy(predicted: &[u64], truth: &[usize]) -> f64 {
    let mut by_pred: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut by_truth: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (&p, &t)) in predicted.iter().zip(truth).enumerate() {
        by_pred.entry(p).or_default().push(i);
        by_truth.entry(t).or_default().push(i);
    }
    let correct: usize = by_pred
        .values()
        .filter(|members| by_truth[&truth[members[0]]] == **members)
        .map(Vec::len)
        .sum();
    correct as f64 / predicted.len() as f64
}

#[test]
fn grouping_accuracy_measure_is_right() {
    assert_eq!(grouping_accuracy(&[1, 1, 2, 2], &[0, 0, 1, 1]), 1.0);
    assert_eq!(grouping_accuracy(&[1, 1, 1, 1], &[0, 0, 1, 1]), 0.0);
    assert_eq!(grouping_accuracy(&[1, 2, 3, 3], &[0, 0, 1, 1]), 0.5);
}

#[test]
fn average_grouping_accuracy_meets_the_target() {
    let lines = corpus::generate(42, 200);
    let mut report = Vec::new();
    let mut systems: Vec<&str> = lines.iter().map(|l| l.system).collect();
    systems.dedup();
    for system in &systems {
        let grouper = Grouper::default();
        let of_system: Vec<&corpus::Line> = lines.iter().filter(|l| l.system == *system).collect();
        let predicted: Vec<u64> = of_system
            .iter()
            .map(|l| {
                grouper
                    .group(Some(system), None, &l.message, None)
                    .fingerprint
            })
            .collect();
        let truth: Vec<usize> = of_system.iter().map(|l| l.template).collect();
        let ga = grouping_accuracy(&predicted, &truth);
        let masked_only: Vec<u64> = of_system
            .iter()
            .map(|l| {
                vigil_engine::fingerprint_of(1, None, None, &vigil_engine::template(&l.message))
            })
            .collect();
        let baseline = grouping_accuracy(&masked_only, &truth);
        if std::env::var_os("VIGIL_GA_DEBUG").is_some() {
            explain(&grouper, &of_system, &predicted);
        }
        report.push((system.to_string(), ga, baseline, of_system.len()));
    }
    let average = report.iter().map(|r| r.1).sum::<f64>() / report.len() as f64;
    let baseline = report.iter().map(|r| r.2).sum::<f64>() / report.len() as f64;
    println!("system       GA     masking alone");
    for (system, ga, masked, n) in &report {
        println!("{system:<12} {ga:.3}  {masked:.3}  ({n} messages)");
    }
    println!("average      {average:.3}  {baseline:.3}");
    assert!(report.len() >= 14, "the corpus covers many systems");
    assert!(
        average >= 0.93,
        "average grouping accuracy {average:.3} is below 0.93"
    );
}

/// Prints, for each true template, the groups its messages went to (to tune the rules).
fn explain(grouper: &Grouper, lines: &[&corpus::Line], predicted: &[u64]) {
    let mut groups: HashMap<usize, HashMap<u64, usize>> = HashMap::new();
    for (l, p) in lines.iter().zip(predicted) {
        *groups.entry(l.template).or_default().entry(*p).or_default() += 1;
    }
    let mut members: HashMap<u64, std::collections::BTreeSet<usize>> = HashMap::new();
    for (l, p) in lines.iter().zip(predicted) {
        members.entry(*p).or_default().insert(l.template);
    }
    let mut keys: Vec<_> = groups.keys().copied().collect();
    keys.sort();
    for t in keys {
        let g = &groups[&t];
        let merged = g.keys().any(|p| members[p].len() > 1);
        if g.len() > 1 || merged {
            let example = lines.iter().find(|l| l.template == t).unwrap();
            println!(
                "  template {t}: {} groups, merged={merged}: {}",
                g.len(),
                example.message
            );
            for p in g.keys().take(3) {
                println!(
                    "      {:?} {:?}",
                    grouper.info(*p).map(|i| i.template),
                    members[p]
                );
            }
        }
    }
}

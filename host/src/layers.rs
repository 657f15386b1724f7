//! The layering rule, checked: every `crate::…` path in code points down.
//! A file's unit is its top-level module: `src/x.rs` or anything under `src/x/`.
//! Files of one unit use each other freely; units of one layer never do.

/// Each unit's layer, bottom (0) to top.
const LAYERS: &[(&str, u8)] = &[
    ("record", 0),
    ("config", 0),
    ("telemetry", 1),
    ("kafka", 2),
    ("plugin", 2),
    ("mongo", 2),
    ("formats", 2),
    ("ops", 3),
    ("pipeline", 4),
    ("cli", 5),
];

/// The sibling layers own their clients: none names another's crate.
const OWNS: &[(&str, &str)] = &[("kafka", "rdkafka"), ("plugin", "wasmtime"), ("mongo", "mongodb"), ("formats", "reqwest")];

/// The units a file's code (not its comments) names as `crate::x…` or `crate::{x…, y…}`.
fn uses(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for part in line.split("crate::").skip(1) {
            let names: Vec<&str> = match part.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                None => vec![part],
            };
            for n in names {
                out.insert(n.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect());
            }
        }
    }
    out
}

/// Every `.rs` file under `dir`, with its unit.
fn files(dir: &std::path::Path, unit: Option<&str>, out: &mut Vec<(String, std::path::PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let unit = unit.map_or(stem, str::to_owned);
        if path.is_dir() {
            files(&path, Some(&unit), out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push((unit, path));
        }
    }
}

#[test]
fn every_import_points_down() {
    let layer = |u: &str| LAYERS.iter().find(|(n, _)| *n == u).map(|(_, l)| *l);
    let mut all = Vec::new();
    files(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")), None, &mut all);
    let mut wrong = Vec::new();
    for (unit, path) in all {
        if matches!(unit.as_str(), "lib" | "main" | "layers") {
            continue;
        }
        let from = layer(&unit).unwrap_or_else(|| panic!("{} is in no layer: add `{unit}` to LAYERS", path.display()));
        let text = std::fs::read_to_string(&path).unwrap();
        let code: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
        for (owner, krate) in OWNS.iter().filter(|(owner, _)| OWNS.iter().any(|(u, _)| *u == unit) && *owner != unit) {
            if code.iter().any(|l| l.contains(&format!("{krate}::"))) {
                wrong.push(format!("{}: the {unit} layer names `{krate}`, which only {owner}/ may use", path.display()));
            }
        }
        for used in uses(&text) {
            match layer(&used) {
                None => wrong.push(format!("{}: `crate::{used}` is no unit; name the full path", path.display())),
                Some(to) if used != unit && to >= from => {
                    wrong.push(format!("{} ({unit}, layer {from}) uses {used} (layer {to})", path.display()))
                }
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "imports pointing up or sideways:\n{}", wrong.join("\n"));
}

#[test]
fn the_parser_sees_groups_and_skips_comments() {
    let text = "use crate::{record::Op, plugin::chain};\n// crate::pipeline\nlet x = crate::mongo::sink::Op::Insert;";
    assert_eq!(uses(text).into_iter().collect::<Vec<_>>(), ["mongo", "plugin", "record"]);
}

//! The workspace's layering, checked from the sources: inside every library crate no module
//! imports one that imports it back (directly or around a longer circle), counting the crate
//! root as a module (a module that uses an item defined in `lib.rs` depends on the root, which
//! declares it). Crates depend on each other one way by construction (Cargo refuses cycles).
//!
//! An import is `crate::a::b`, `super::x`, a `mod a;` declaration, or a `use a::...` of a
//! child module; unit-test modules (`#[cfg(test)] mod tests { .. }` at the end of a file) are
//! left out, since they see their parent by design.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 10] = [
    "protocol",
    "wal",
    "engine",
    "embed",
    "server",
    "client",
    "embedding-service",
    "bench",
    "tests",
    "python",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

/// `a::b` for `src/a/b.rs` and `src/a/b/mod.rs`; `crate` for `src/lib.rs`; `None` for the
/// roots of binaries (`main.rs`, `bin/`), which are crates of their own.
fn module_name(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    match parts.first().map(String::as_str) {
        Some("main" | "bin") => None,
        Some("lib") if parts.len() == 1 => Some("crate".to_owned()),
        _ => {
            let parts: Vec<&str> = parts
                .iter()
                .map(String::as_str)
                .filter(|part| *part != "mod")
                .collect();
            Some(parts.join("::"))
        }
    }
}

/// The source without line comments and without a trailing unit-test module.
fn code(source: &str) -> String {
    let mut end = source.len();
    let mut from = 0;
    while let Some(at) = source[from..].find("#[cfg(test)]") {
        let start = from + at;
        let window = &source[start..source.len().min(start + 400)];
        if let Some(tests) = window.find("mod tests") {
            if window[tests..]
                .trim_start_matches("mod tests")
                .trim_start()
                .starts_with('{')
            {
                end = start;
                break;
            }
        }
        from = start + 1;
    }
    let code = source[..end]
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    inline_modules_as_self(&code)
}

/// `super::` inside an inline `mod x { .. }` names the file's own module: rewritten to `self::`.
fn inline_modules_as_self(code: &str) -> String {
    let mut out = code.to_owned();
    let mut from = 0;
    while let Some(at) = out[from..].find("mod ") {
        let start = from + at;
        from = start + 4;
        let rest = &out[from..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_len == 0 || !rest[name_len..].trim_start().starts_with('{') {
            continue;
        }
        let open = from + name_len + rest[name_len..].find('{').unwrap_or(0);
        let mut depth = 0_usize;
        let mut close = out.len();
        for (offset, c) in out[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + offset;
                        break;
                    }
                }
                _ => {}
            }
        }
        let body = out[open..close].replace("super::", "self::");
        out.replace_range(open..close, &body);
    }
    out
}

fn identifiers_after<'a>(code: &'a str, prefix: &str) -> Vec<(&'a str, Option<&'a str>)> {
    let ident = |text: &'a str| -> &'a str {
        let len = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len());
        &text[..len]
    };
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = &rest[..at];
        rest = &rest[at + prefix.len()..];
        if before
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue; // `foo_crate::`, not `crate::`
        }
        let first = ident(rest);
        let second = rest[first.len()..]
            .strip_prefix("::")
            .map(ident)
            .filter(|second| !second.is_empty());
        found.push((first, second));
    }
    found
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or_else(|| "crate".to_owned(), |(parent, _)| parent.to_owned())
}

fn child(module: &str, name: &str) -> String {
    if module == "crate" {
        name.to_owned()
    } else {
        format!("{module}::{name}")
    }
}

/// The modules a file declares only for tests (`#[cfg(test)]` on the line before `mod x;`, or
/// before another attribute line before it).
fn test_modules(module: &str, source: &str) -> Vec<String> {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    lines
        .windows(2)
        .chain(lines.windows(3).filter(|three| three[1].starts_with("#[")))
        .filter(|window| window[0].contains("cfg(test)"))
        .filter_map(|window| {
            let last = window[window.len() - 1];
            let name = last.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(child(module, name))
        })
        .collect()
}

/// Each module's imports of other modules of the same crate (test-only modules left out).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let raw: BTreeMap<String, String> = files
        .iter()
        .filter_map(|file| {
            module_name(src, file).map(|name| (name, std::fs::read_to_string(file).unwrap()))
        })
        .collect();
    let tests: BTreeSet<String> = raw
        .iter()
        .flat_map(|(module, source)| test_modules(module, source))
        .collect();
    let sources: BTreeMap<String, String> = raw
        .into_iter()
        .filter(|(module, _)| !tests.contains(module))
        .map(|(module, source)| (module, code(&source)))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, code) in &sources {
        let mut imports = BTreeSet::new();
        let resolve = |base: String, next: Option<&str>| match next {
            Some(next) if sources.contains_key(&child(&base, next)) => child(&base, next),
            _ => base,
        };
        for (first, second) in identifiers_after(code, "crate::") {
            let target = if sources.contains_key(first) {
                resolve(first.to_owned(), second)
            } else {
                "crate".to_owned()
            };
            imports.insert(target);
        }
        if module != "crate" {
            for (first, _) in identifiers_after(code, "super::") {
                let up = parent(module);
                imports.insert(resolve(up, Some(first)));
            }
        }
        for prefix in ["mod ", "use "] {
            for (first, _) in identifiers_after(code, prefix) {
                let below = child(module, first);
                if sources.contains_key(&below) {
                    imports.insert(below);
                }
            }
        }
        imports.remove(module);
        graph.insert(module.clone(), imports);
    }
    graph
}

/// A circle through `start`, if any (depth-first over the graph).
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((module, path)) = stack.pop() {
        for next in graph.get(&module).into_iter().flatten() {
            if next == start {
                return Some(path.clone());
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut circles = Vec::new();
    for krate in CRATES {
        let graph = module_graph(&root.join(krate).join("src"));
        assert!(!graph.is_empty(), "{krate}: no modules found");
        for module in graph.keys() {
            if let Some(circle) = circle(&graph, module) {
                circles.push(format!("{krate}: {}", circle.join(" -> ")));
                break;
            }
        }
    }
    assert!(circles.is_empty(), "module circles: {circles:#?}");
}

#[test]
fn the_checker_finds_a_circle() {
    let graph = BTreeMap::from([
        ("crate".to_owned(), BTreeSet::from(["a".to_owned()])),
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["crate".to_owned()])),
    ]);
    assert_eq!(
        circle(&graph, "a"),
        Some(vec!["a".to_owned(), "b".to_owned(), "crate".to_owned()])
    );
    assert_eq!(
        code("use crate::x; // a note\n#[cfg(test)]\nmod tests {\n use super::*;\n}"),
        "use crate::x; "
    );
    assert_eq!(
        code("mod inner {\n    use super::A;\n}\nuse super::B;"),
        "mod inner {\n    use self::A;\n}\nuse super::B;"
    );
}

//! The source tree's shape, checked: no import circle between the
//! top-level modules of the host or of any crate in the workspace, and
//! raw system calls only in `host/src/sys.rs`.
//!
//! How the import graph is built: every `crate::…`, `super::…` and
//! `self::…` path in a file (outside `#[cfg(test)]` modules and comments),
//! plus paths that start with a child module's name, is resolved to
//! the module it names (the longest prefix that is a module file). An edge
//! goes from the file's top-level module to the named file's top-level
//! module; edges inside one top-level module (a parent and its children)
//! are its own business, `pub use` re-exports in the crate root are its
//! public facade rather than imports, and test-only modules do not count. A strongly connected component of more than one
//! top-level module is an import circle, and fails the test with the
//! evidence (file and path) for each edge in it.
//!
//! Run with `--nocapture` to see each crate's modules in layer order
//! (a module only imports from layers below it); `docs/ARCHITECTURE.md`
//! explains the host's layers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One crate's source: module path (`a::b`, `""` for the root) → file text
/// with comments and test modules removed.
struct Crate {
    name: String,
    files: BTreeMap<String, (PathBuf, String)>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` → `a::b`; `src/lib.rs` → `""`.
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

/// Removes `//` and `/* */` comments and string/char literal contents,
/// keeping line structure, so paths in docs or strings do not count.
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == b'\'' && (b.get(i + 1) == Some(&b'\\') || b.get(i + 2) == Some(&b'\'')) {
            // A char literal ('x', '\n', '"'); a lifetime has no closing quote.
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"'))
            && (i == 0 || !(b[i - 1] as char).is_ascii_alphanumeric() && b[i - 1] != b'_')
        {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let end = src[j + 1..]
                .find(&close)
                .map(|e| j + 1 + e + close.len())
                .unwrap_or(b.len());
            out.extend(std::iter::repeat_n('\n', src[i..end].matches('\n').count()));
            out.push_str("\"\"");
            i = end;
        } else if c == b'"' {
            // A plain string literal (raw strings in this tree hold no
            // quotes that would confuse this).
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Removes `#[cfg(test)] mod name { … }` blocks (tests may import freely).
fn strip_test_modules(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub(crate) mod ");
        let open = trimmed.find(['{', ';']);
        match (is_mod, open) {
            (true, Some(o)) if trimmed.as_bytes()[o] == b'{' => {
                let body_start = after.len() - trimmed.len() + o;
                let mut depth = 0usize;
                let mut end = after.len();
                for (k, ch) in after[body_start..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = body_start + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// Removes `pub use …;` statements from the crate root: there they only
/// make the crate's public names short (a facade), and count as no import.
fn strip_root_reexports(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = rest.find("pub use ") {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(';')
            .map(|e| at + e + 1)
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Names of the child modules a file declares as `#[cfg(test)] mod name;`.
fn test_children(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("#[cfg(test)]") {
        rest = &rest[at + "#[cfg(test)]".len()..];
        let t = rest.trim_start();
        let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
        if let Some(decl) = t.strip_prefix("mod ") {
            let name: String = decl.chars().take_while(|c| is_ident(*c)).collect();
            if decl[name.len()..].trim_start().starts_with(';') {
                out.push(name);
            }
        }
    }
    out
}

fn load(name: &str, src: &Path) -> Crate {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    let mut files = BTreeMap::new();
    let mut test_only = Vec::new();
    for p in paths {
        let module = module_path(src, &p);
        let text = strip_comments(&fs::read_to_string(&p).unwrap());
        for child in test_children(&text) {
            test_only.push(if module.is_empty() {
                child
            } else {
                format!("{module}::{child}")
            });
        }
        let mut text = strip_test_modules(&text);
        if module.is_empty() {
            text = strip_root_reexports(&text);
        }
        files.insert(module, (p, text));
    }
    files.retain(|m, _| {
        !test_only
            .iter()
            .any(|t| m == t || m.starts_with(&format!("{t}::")))
    });
    Crate {
        name: name.to_string(),
        files,
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands a path that may end in a `{…}` group into plain paths:
/// `a::{b::C, d}` → `a::b::C`, `a::d`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.trim().to_string()];
    };
    let prefix = path[..open].trim();
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (k, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .flat_map(|s| expand(&format!("{prefix}{s}")))
        .collect()
}

/// The paths a file names: each `use` path and each `a::b` path in code
/// (`crate::`, `super::`, `self::`, or a child module's name first).
fn paths_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    // `use` statements, braces included.
    let mut rest = text;
    while let Some(at) = rest.find("use ") {
        let before_ok = at == 0 || !is_ident(rest[..at].chars().next_back().unwrap());
        let stmt_end = rest[at..].find(';').map(|e| at + e).unwrap_or(rest.len());
        if before_ok {
            let stmt: String = rest[at + 4..stmt_end]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if stmt.starts_with(is_ident_start) {
                found.extend(expand(&stmt));
            }
        }
        rest = &rest[(at + 4).min(rest.len())..];
    }
    // Inline `crate::a::b`, `super::x`, `self::x` in code.
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if is_ident_start(chars[i]) && (i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != '$') {
            let mut j = i;
            while j < chars.len() && (is_ident(chars[j]) || chars[j] == ':') {
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            // A path ending in `::` opens a `{…}` group: `use` handles it.
            // Paths that start with neither `crate`, `super` nor `self`
            // count when their first segment is a child module (see
            // `resolve`); `std::…` and the like resolve to nothing.
            if word.contains("::") && !word.ends_with("::") {
                found.push(word.trim_end_matches(':').to_string());
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

/// Resolves `path`, named in module `from`, to the longest module prefix.
fn resolve(c: &Crate, from: &str, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").map(String::from).collect()
    };
    let mut k = 0;
    match segs.first().copied() {
        Some("crate") => {
            base.clear();
            k = 1;
        }
        Some("self") => k = 1,
        Some("super") => {
            while segs.get(k) == Some(&"super") {
                base.pop();
                k += 1;
            }
        }
        Some(first) => {
            // A `use` whose first segment is a child module of `from`.
            let mut child = base.clone();
            child.push(first.to_string());
            if !c.files.contains_key(&child.join("::")) {
                return None;
            }
        }
        None => return None,
    }
    let mut best = base.join("::");
    for s in &segs[k..] {
        base.push(s.to_string());
        let candidate = base.join("::");
        if c.files.contains_key(&candidate) {
            best = candidate;
        } else {
            break;
        }
    }
    Some(best)
}

fn top(module: &str) -> String {
    match module.split("::").next() {
        Some("") | None => "crate".to_string(),
        Some(t) => t.to_string(),
    }
}

/// Top-level module → (named top-level module → one piece of evidence).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Edges between top-level modules (a directory module counts as one):
/// the layers are the crate's top-level modules.
const FILE_LEVEL: bool = false;

fn graph(c: &Crate) -> Graph {
    let mut g: Graph = BTreeMap::new();
    for (module, (file, text)) in &c.files {
        let from = top(module);
        g.entry(from.clone()).or_default();
        for p in paths_in(text) {
            let Some(to) = resolve(c, module, &p) else {
                continue;
            };
            let to = if FILE_LEVEL { to } else { top(&to) };
            let from = if FILE_LEVEL {
                module.clone()
            } else {
                from.clone()
            };
            g.entry(from.clone()).or_default();
            if to != from {
                g.get_mut(&from).unwrap().entry(to).or_insert_with(|| {
                    format!(
                        "{}: {p}",
                        file.strip_prefix(workspace()).unwrap_or(file).display()
                    )
                });
            }
        }
    }
    g
}

/// Tarjan's strongly connected components.
fn components(g: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        let g = s.g;
        for w in g[v].keys() {
            let w = w.as_str();
            if !g.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            comp.sort();
            s.out.push(comp);
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Layer of each module: 0 for modules that import nothing in the crate,
/// else one more than the highest layer it imports (only meaningful
/// without circles).
fn layers(g: &Graph) -> BTreeMap<usize, Vec<String>> {
    fn depth(
        g: &Graph,
        v: &str,
        memo: &mut BTreeMap<String, usize>,
        seen: &mut Vec<String>,
    ) -> usize {
        if let Some(&d) = memo.get(v) {
            return d;
        }
        if seen.iter().any(|s| s == v) {
            return 0;
        }
        seen.push(v.to_string());
        let d = g[v]
            .keys()
            .filter(|w| g.contains_key(*w))
            .map(|w| depth(g, w, memo, seen) + 1)
            .max()
            .unwrap_or(0);
        seen.pop();
        memo.insert(v.to_string(), d);
        d
    }
    let mut memo = BTreeMap::new();
    let mut out: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for v in g.keys() {
        let d = depth(g, v, &mut memo, &mut Vec::new());
        out.entry(d).or_default().push(v.clone());
    }
    out
}

fn crates() -> Vec<Crate> {
    let ws = workspace();
    let mut out = vec![
        load("switchyard (host)", &ws.join("host/src")),
        load("module_api", &ws.join("module_api/src")),
    ];
    let mut mods: Vec<PathBuf> = fs::read_dir(ws.join("modules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    mods.sort();
    for m in mods {
        let name = m.file_name().unwrap().to_string_lossy().into_owned();
        out.push(load(&format!("modules/{name}"), &m.join("src")));
    }
    out
}

#[test]
fn no_import_circle_in_any_crate() {
    let mut failures = Vec::new();
    for c in crates() {
        let g = graph(&c);
        println!("{}:", c.name);
        for (layer, mods) in layers(&g) {
            println!("  L{layer}: {}", mods.join(" "));
        }
        for comp in components(&g).into_iter().filter(|c| c.len() > 1) {
            let mut msg = format!("{}: import circle among {}:", c.name, comp.join(", "));
            for a in &comp {
                for (b, why) in &g[a] {
                    if comp.contains(b) {
                        msg.push_str(&format!("\n    {a} -> {b}   ({why})"));
                    }
                }
            }
            failures.push(msg);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_checker_sees_a_circle() {
    // A circle written the way the tree writes imports must be found, or
    // the test above proves nothing.
    let mut files = BTreeMap::new();
    let file = |t: &str| {
        (
            PathBuf::from("x.rs"),
            strip_test_modules(&strip_comments(t)),
        )
    };
    files.insert(String::new(), file("pub mod a;\npub mod b;\npub mod c;\n"));
    files.insert("a".into(), file("use crate::b::{Thing, other::More};\n"));
    files.insert(
        "b".into(),
        file("pub struct Thing;\nfn f() { crate::c::go(); }\n"),
    );
    files.insert("b::other".into(), file("pub struct More;\n"));
    files.insert(
        "c".into(),
        file(
            "// crate::a is only a comment\n#[cfg(test)]\nmod tests { use crate::b::Thing; }\n\
             pub fn go() { let q = '\"'; let s = \"crate::b\"; super::a::x(q, s); }\n",
        ),
    );
    let c = Crate {
        name: "sample".into(),
        files,
    };
    let g = graph(&c);
    assert!(g["a"].contains_key("b"), "{g:?}");
    assert!(g["b"].contains_key("c"), "{g:?}");
    assert!(g["c"].contains_key("a"), "{g:?}");
    assert!(!g["c"].contains_key("b"), "test module counted: {g:?}");
    let circles: Vec<_> = components(&g).into_iter().filter(|c| c.len() > 1).collect();
    assert_eq!(circles, vec![vec!["a".to_string(), "b".into(), "c".into()]]);
}

#[test]
fn raw_system_calls_only_in_sys_rs() {
    let src = workspace().join("host/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for f in files {
        if f.ends_with("sys.rs") {
            continue;
        }
        let text = strip_comments(&fs::read_to_string(&f).unwrap());
        for (n, line) in text.lines().enumerate() {
            if let Some(at) = line.find("libc::") {
                let rest = &line[at + 6..];
                let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
                let is_call = rest[name.len()..].starts_with('(')
                    && name.starts_with(|c: char| c.is_ascii_lowercase());
                if is_call {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "raw system calls outside host/src/sys.rs:\n{}",
        found.join("\n")
    );
}

//! The code excerpts of the README and the guides under `docs/` marked
//! `<!-- compiled: FILE -->` are taken from that example, which the test
//! suite builds: every line of each excerpt must appear in the file, in
//! order, so the documentation cannot drift from code that compiles.

use std::path::Path;

/// Every `(file, excerpt)` pair of one Markdown page.
fn excerpts(page: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let Some(file) = line
            .strip_prefix("<!-- compiled: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(
            lines.next(),
            Some("```rust"),
            "{file}: a rust block follows the marker"
        );
        let block: Vec<String> = lines
            .by_ref()
            .take_while(|line| *line != "```")
            .map(str::to_owned)
            .collect();
        found.push((file.to_owned(), block));
    }
    found
}

/// Checks the page's excerpts against their files; returns how many there
/// are.
fn check(root: &Path, page: &str) -> usize {
    let text = std::fs::read_to_string(root.join(page)).expect("the page");
    let excerpts = excerpts(&text);
    for (file, block) in &excerpts {
        let source = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("{page}: cannot read {file}: {e}"));
        let mut rest = source.lines();
        for line in block.iter().filter(|line| !line.trim().is_empty()) {
            assert!(
                rest.any(|source_line| source_line == line),
                "{page}: the line `{line}` is not in {file} (in this order)"
            );
        }
    }
    excerpts.len()
}

#[test]
fn readme_excerpts_are_lines_of_compiled_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let count = check(root, "README.md");
    assert!(count >= 3, "the README's compiled sections: {count}");
}

#[test]
fn guide_excerpts_are_lines_of_compiled_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("the docs folder")
        .map(|entry| entry.expect("a docs entry").file_name())
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    pages.sort();
    let total: usize = pages.iter().map(|page| check(root, page)).sum();
    assert!(total >= 8, "the guides' compiled sections: {total}");
}

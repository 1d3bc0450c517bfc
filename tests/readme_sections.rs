//! The README's code excerpts marked `<!-- compiled: FILE -->` are taken
//! from that example, which the test suite builds: every line of each
//! excerpt must appear in the file, in order, so the README cannot drift
//! from code that compiles.

use std::path::Path;

/// Every `(file, excerpt)` pair of the README.
fn excerpts(readme: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut lines = readme.lines();
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

#[test]
fn readme_excerpts_are_lines_of_compiled_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("the README");
    let excerpts = excerpts(&readme);
    assert!(
        excerpts.len() >= 5,
        "the README's compiled sections: {}",
        excerpts.len()
    );
    for (file, block) in excerpts {
        let source = std::fs::read_to_string(root.join(&file)).expect("the example");
        let mut rest = source.lines();
        for line in block.iter().filter(|line| !line.trim().is_empty()) {
            assert!(
                rest.any(|source_line| source_line == line),
                "{file}: the README's line `{line}` is not in the example (in this order)"
            );
        }
    }
}

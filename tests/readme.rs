//! The README and the documents it leads to: the README stays short enough to read (at most
//! 20,000 bytes), names no docs.rs page of this crate before it is published, and every
//! relative link in it and in docs/*.md points at a file or directory that exists.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The targets of the Markdown links `[text](target)` in `text` (inline links only; the
/// documents use no reference links).
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

fn relative(target: &str) -> Option<&str> {
    let external = target.contains("://") || target.starts_with("mailto:");
    let path = target.split('#').next().unwrap_or("");
    (!external && !path.is_empty()).then_some(path)
}

fn documents() -> Vec<PathBuf> {
    let mut docs = vec![Path::new(ROOT).join("README.md")];
    for e in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    docs.sort();
    docs
}

#[test]
fn readme_is_at_most_20000_bytes() {
    let n = std::fs::metadata(Path::new(ROOT).join("README.md"))
        .unwrap()
        .len();
    assert!(n <= 20_000, "README.md is {n} bytes: move detail to docs/");
}

#[test]
fn no_docs_rs_page_of_this_unpublished_crate() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    assert!(
        !readme.contains("docs.rs/mielin"),
        "the README links to docs.rs, but the crate is not published"
    );
}

#[test]
fn relative_links_point_at_files_that_exist() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let dir = doc.parent().unwrap();
        for target in links(&text) {
            let Some(path) = relative(&target) else {
                continue;
            };
            checked += 1;
            if !dir.join(path).exists() {
                broken.push(format!("{}: {target}", doc.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken relative links:\n{}",
        broken.join("\n")
    );
    assert!(
        checked >= 20,
        "only {checked} relative links found: is the parser right?"
    );
}

#[test]
fn the_link_parser_finds_links() {
    let l = links("see [a](docs/a.md#x) and [b](https://x.y/z) [c](LICENSE-MIT)");
    assert_eq!(l, ["docs/a.md#x", "https://x.y/z", "LICENSE-MIT"]);
    assert_eq!(relative("docs/a.md#x"), Some("docs/a.md"));
    assert_eq!(relative("https://x.y/z"), None);
    assert_eq!(relative("#anchor"), None);
}

//! INI documents with line numbers.
//!
//! rust-ini does the parsing (indented multi-line values, `;`/`#` comment
//! lines). Inline comments are `;` after whitespace on a key's first line,
//! as configparser's `inline_comment_prefixes=(";",)`; they are cut here
//! (rust-ini's own inline-comment mode eats the next key's first letter),
//! and indented continuation lines are left alone so scripts keep their
//! semicolons. rust-ini keeps order but not positions, so a
//! light scan of the raw text finds the line of every section header and key;
//! errors can then point at `file:line [section] key`. Duplicate sections and
//! keys, and keys outside any section, are refused here, once, for every
//! file format built on top.

use crate::error::{ConfigError, Location};
use crate::provenance::Sourced;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IniDocument {
    pub file: String,
    pub sections: Vec<IniSection>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IniSection {
    pub name: String,
    pub line: usize,
    pub entries: Vec<IniEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IniEntry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

impl IniSection {
    pub fn location(&self, file: &str) -> Location {
        Location::section(file, &self.name, self.line)
    }

    pub fn get(&self, key: &str) -> Option<&IniEntry> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    /// Every entry as a value that knows its file, section, key and line.
    pub fn sourced<C: FromIterator<(String, Sourced)>>(&self, file: &str) -> C {
        let location = self.location(file);
        self.entries
            .iter()
            .map(|entry| {
                let at = location.key(&entry.key, entry.line);
                (entry.key.clone(), Sourced::new(entry.value.clone(), at))
            })
            .collect()
    }
}

impl IniDocument {
    /// Parses `text`, the contents of `file` (a path relative to the
    /// deployment root, used in messages).
    pub fn parse(file: &str, text: &str) -> Result<IniDocument, ConfigError> {
        let options = ini::ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            enabled_indented_mutiline_value: true,
            enabled_preserve_key_leading_whitespace: false,
        };
        let text = &strip_inline_comments(text);
        check_lines(file, text)?;
        let last_line = text.lines().count().max(1);
        let parsed = ini::Ini::load_from_str_opt(text, options).map_err(|error| {
            ConfigError::new(
                Location::file(file).at_line((error.line + 1).min(last_line)),
                format!("malformed INI: {}", error.msg),
            )
        })?;
        let positions = scan_positions(text);
        let lines: Vec<&str> = text.lines().collect();

        let mut sections: Vec<IniSection> = Vec::new();
        let mut section_lines: HashMap<&str, usize> = HashMap::new();
        let mut headers = positions.iter();
        for (name, properties) in &parsed {
            let Some(name) = name else {
                if let Some((key, _)) = properties.iter().next() {
                    let line = positions
                        .first()
                        .filter(|header| header.name.is_empty())
                        .and_then(|header| header.key_line(key, 0))
                        .unwrap_or(1);
                    return Err(ConfigError::new(
                        Location::file(file).key(key, line),
                        "key outside of any section",
                    ));
                }
                continue;
            };
            let header = headers
                .find(|header| header.name == name)
                .cloned()
                .unwrap_or_default();
            if let Some(first) = section_lines.insert(name, header.line) {
                return Err(ConfigError::new(
                    Location::section(file, name, header.line),
                    format!("section defined twice (first at line {first})"),
                ));
            }
            let mut entries: Vec<IniEntry> = Vec::new();
            let mut seen_keys: HashMap<&str, usize> = HashMap::new();
            for (key, parsed_value) in properties.iter() {
                let count = seen_keys.entry(key).or_default();
                let seen = *count;
                *count += 1;
                let key_line = header.key_line(key, seen);
                let line = key_line.unwrap_or(header.line);
                // rust-ini drops the indentation of continuation lines; the
                // value is taken again from the text to keep it.
                let value = key_line.map_or_else(
                    || parsed_value.to_string(),
                    |line| value_as_written(&lines, line),
                );
                if seen > 0 {
                    return Err(ConfigError::new(
                        Location::section(file, name, header.line).key(key, line),
                        "key defined twice in this section",
                    ));
                }
                entries.push(IniEntry {
                    key: key.to_string(),
                    value,
                    line,
                });
            }
            sections.push(IniSection {
                name: name.to_string(),
                line: header.line,
                entries,
            });
        }
        Ok(IniDocument {
            file: file.to_string(),
            sections,
        })
    }
}

/// Checks what rust-ini would misread: a section header must close on its
/// own line (rust-ini reads on into the next lines looking for the `]`),
/// an indented line continues a value only after a key (rust-ini would
/// take it, and the lines after it, for a key of its own), and an
/// unindented line is a key with `=` (or `:`): rust-ini reads a line
/// without one as the start of a key that goes on until the next `=`,
/// swallowing the section headers in between.
fn check_lines(file: &str, text: &str) -> Result<(), ConfigError> {
    let mut after_key = false;
    let mut section: Option<&str> = None;
    for (index, line) in text.lines().enumerate() {
        let at = Location::file(file).at_line(index + 1);
        let trimmed = line.trim_end();
        if trimmed.trim_start().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) && after_key {
            continue;
        }
        let trimmed = trimmed.trim_start();
        let key_or_header = trimmed.starts_with('[') || trimmed.contains(['=', ':']);
        if line.starts_with([' ', '\t']) && !key_or_header && !trimmed.starts_with([';', '#']) {
            return Err(ConfigError::new(
                at,
                "indented line with no key above it; indent only the lines that continue a value",
            ));
        }
        if trimmed.starts_with([';', '#']) {
            continue;
        }
        if trimmed.starts_with('[') {
            if !trimmed.ends_with(']') {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "malformed section header `{trimmed}`: expected `]` at the end of the line"
                    ),
                ));
            }
            section = Some(trimmed[1..trimmed.len() - 1].trim());
            after_key = false;
            continue;
        }
        if !trimmed.contains(['=', ':']) {
            let in_section = Location {
                section: section.map(str::to_string),
                ..at
            };
            return Err(ConfigError::new(
                in_section,
                format!(
                    "line `{trimmed}` has no `=`: write `key = value`, or indent it to continue the value above"
                ),
            ));
        }
        after_key = true;
    }
    Ok(())
}

/// Cuts ` ; comment` from unindented lines and drops indented `;` lines,
/// keeping the line count.
fn strip_inline_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let indented = body.starts_with([' ', '\t']);
        // An indented `;` line is a comment too (a `#` line is kept: it may
        // be a shell comment or a shebang inside a value).
        if indented && body.trim_start().starts_with(';') {
            out.push_str(newline);
            continue;
        }
        let cut = (!indented)
            .then(|| body.find(" ;").or_else(|| body.find("\t;")))
            .flatten();
        out.push_str(cut.map_or(body, |at| body[..at].trim_end()));
        out.push_str(newline);
    }
    out
}

/// The value of the key on `line` (from 1): the text after its `=` or `:`
/// and the indented (or blank) lines below it, with the indentation common
/// to all of its lines removed, as Python's `textwrap.dedent` does. The
/// first line counts as unindented when it holds text, so a value that
/// starts beside its key keeps its continuation lines exactly as written,
/// and one that starts on the next line loses only the indentation its
/// lines share. Blank lines at either end are dropped.
fn value_as_written(lines: &[&str], line: usize) -> String {
    let key_line = lines[line - 1];
    let first = key_line
        .find(['=', ':'])
        .map_or("", |at| key_line[at + 1..].trim());
    let continuation: Vec<&str> = lines[line..]
        .iter()
        .take_while(|text| text.starts_with([' ', '\t']) || text.trim().is_empty())
        .map(|text| text.trim_end())
        .collect();
    let indents = continuation
        .iter()
        .filter(|text| !text.is_empty())
        .map(|text| &text[..text.len() - text.trim_start().len()]);
    let common = if first.is_empty() {
        indents.reduce(common_prefix).unwrap_or("")
    } else {
        ""
    };
    let mut value = first.to_string();
    for text in continuation {
        value.push('\n');
        value.push_str(text.strip_prefix(common).unwrap_or(text));
    }
    value.trim_matches('\n').to_string()
}

/// The longest common prefix of two strings of whitespace.
fn common_prefix<'a>(a: &'a str, b: &'a str) -> &'a str {
    let shared = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((at, _), _)| at);
    &a[..shared]
}

#[derive(Clone, Debug, Default)]
struct HeaderPosition {
    name: String,
    line: usize,
    /// The lines of each key, in order: looked up once per key, so a
    /// section of 40k keys parses in linear time.
    keys: HashMap<String, Vec<usize>>,
}

impl HeaderPosition {
    /// The line of the `nth` (from 0) occurrence of `key`.
    fn key_line(&self, key: &str, nth: usize) -> Option<usize> {
        self.keys.get(key)?.get(nth).copied()
    }
}

/// Finds the line of each section header and each key, in order. Indented
/// lines continue a multi-line value and are skipped; the leading entry with
/// an empty name collects keys written before any section.
fn scan_positions(text: &str) -> Vec<HeaderPosition> {
    let mut positions = vec![HeaderPosition::default()];
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.starts_with([' ', '\t']) || line.is_empty() {
            continue;
        }
        if line.starts_with([';', '#']) {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.split(']').next().unwrap_or_default().trim();
            positions.push(HeaderPosition {
                name: name.to_string(),
                line: number,
                keys: HashMap::new(),
            });
            continue;
        }
        if let Some(end) = line.find(['=', ':']) {
            let key = line[..end].trim().to_string();
            if let Some(current) = positions.last_mut() {
                current.keys.entry(key).or_default().push(number);
            }
        }
    }
    positions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_and_lines_in_order() {
        let text = "; a comment\n[hosts]\nlocalhost = tick, supervisor\n\n[component:tick]\npriority = 20 ; inline\ncommand =\n    first\n    second\n";
        let doc = IniDocument::parse("environments/dev.cfg", text).unwrap();
        assert_eq!(doc.sections.len(), 2);
        assert_eq!(doc.sections[0].name, "hosts");
        assert_eq!(doc.sections[0].line, 2);
        assert_eq!(doc.sections[0].entries[0].line, 3);
        let tick = &doc.sections[1];
        assert_eq!(tick.get("priority").unwrap().value, "20");
        assert_eq!(tick.get("priority").unwrap().line, 6);
        assert_eq!(tick.get("command").unwrap().value, "first\nsecond");
    }

    #[test]
    fn continuation_lines_keep_their_indentation() {
        let doc = IniDocument::parse(
            "c.cfg",
            "[a]\nyaml = top:\n  a:\n      b: 1\nrun =\n    if x; then\n\n      echo\n    fi\n\nz = 1\n",
        )
        .unwrap();
        let section = &doc.sections[0];
        assert_eq!(section.get("yaml").unwrap().value, "top:\n  a:\n      b: 1");
        assert_eq!(
            section.get("run").unwrap().value,
            "if x; then\n\n  echo\nfi"
        );
        assert_eq!(section.get("z").unwrap().value, "1");
    }

    #[test]
    fn duplicate_section_is_refused_with_both_lines() {
        let err = IniDocument::parse("c.cfg", "[a]\nx = 1\n[a]\ny = 2\n").unwrap_err();
        assert_eq!(err.location.line, Some(3));
        assert!(err.message.contains("line 1"), "{err}");
    }

    #[test]
    fn duplicate_key_is_refused() {
        let err = IniDocument::parse("c.cfg", "[a]\nx = 1\nx = 2\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.cfg:3 [a] x: key defined twice in this section"
        );
    }

    #[test]
    fn key_outside_section_is_refused() {
        let err = IniDocument::parse("c.cfg", "x = 1\n[a]\n").unwrap_err();
        assert_eq!(err.location.line, Some(1));
    }

    #[test]
    fn indented_line_without_a_key_is_refused() {
        let err = IniDocument::parse("c.cfg", "[a]\n    stray\nx = 1\n").unwrap_err();
        assert_eq!(err.location.line, Some(2));
        assert!(err.message.contains("no key above it"), "{err}");
    }

    #[test]
    fn indented_semicolon_lines_are_comments_and_hash_lines_are_kept() {
        let doc = IniDocument::parse(
            "c.cfg",
            "[a]\nx = 1 ; why\n    ; more on why\ns =\n    #!/bin/sh\n    echo\n",
        )
        .unwrap();
        assert_eq!(doc.sections[0].get("x").unwrap().value, "1");
        assert_eq!(doc.sections[0].get("s").unwrap().value, "#!/bin/sh\necho");
    }

    #[test]
    fn malformed_header_names_the_line() {
        let err = IniDocument::parse("c.cfg", "[a]\nx = 1\n[broken\ny = 2\n").unwrap_err();
        assert_eq!(err.location.line, Some(3));
        assert!(err.message.contains("`[broken`"), "{err}");
    }
}

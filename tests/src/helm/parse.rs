//! Go text/template parsing for the chart renderer: actions with `{{-`/`-}}` trimming, comments,
//! pipelines of fields, literals and function calls, `if`/`else`/`range`/`define`/`end`.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

/// A value source inside a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// `.a.b` (from the current dot) or `$.a.b` (from the template's data); empty path = the value.
    Field {
        from_root: bool,
        path: Vec<String>,
    },
    Str(String),
    Int(i64),
    /// A function name (first word of a command).
    Func(String),
}

/// `operand args...`: a function call when the first operand is a name.
pub type Command = Vec<Operand>;
/// `command | command | ...`: each result is the last argument of the next.
pub type Pipeline = Vec<Command>;

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Text(String),
    Output(Pipeline),
    /// `if`/`else if` branches in order, then the `else` body.
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range(Pipeline, Vec<Node>),
}

/// One template file: its output nodes and the `define`d templates it holds.
#[derive(Debug, Default)]
pub struct Parsed {
    pub nodes: Vec<Node>,
    pub defines: BTreeMap<String, Vec<Node>>,
}

enum Tok {
    Text(String),
    /// The words of one action (comments are dropped).
    Action(Vec<String>),
}

const SPACE: &[char] = &[' ', '\t', '\r', '\n'];

/// Splits text and actions, applying Go's trim markers (`{{- ` trims the whitespace before,
/// ` -}}` the whitespace after).
fn lex(src: &str) -> Result<Vec<Tok>> {
    let mut toks = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start_matches(SPACE);
        }
        let after = &rest[start + 2..];
        let (left_trim, body_start) = match after.strip_prefix('-') {
            Some(b) if b.starts_with(SPACE) => (true, b),
            _ => (false, after),
        };
        if left_trim {
            text = text.trim_end_matches(SPACE);
        }
        toks.push(Tok::Text(text.to_string()));
        let end = body_start.find("}}").context("unclosed {{")?;
        let mut body = &body_start[..end];
        trim_next = false;
        if let Some(b) = body.strip_suffix('-') {
            if b.ends_with(SPACE) {
                trim_next = true;
                body = b;
            }
        }
        rest = &body_start[end + 2..];
        let body = body.trim_matches(SPACE);
        if body.starts_with("/*") {
            if !body.ends_with("*/") {
                bail!("comment not closed by */ before }}}}");
            }
            continue;
        }
        toks.push(Tok::Action(words(body)?));
    }
    let text = if trim_next {
        rest.trim_start_matches(SPACE)
    } else {
        rest
    };
    toks.push(Tok::Text(text.to_string()));
    Ok(toks)
}

/// Words of an action: quoted strings stay one word (quotes kept), `|` is its own word.
fn words(body: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(&c) = chars.peek() {
        if SPACE.contains(&c) {
            chars.next();
        } else if c == '|' {
            chars.next();
            out.push("|".to_string());
        } else if c == '"' {
            let mut w = String::from(chars.next().unwrap_or('"'));
            loop {
                match chars.next() {
                    Some('\\') => {
                        w.push('\\');
                        w.push(chars.next().context("dangling \\ in a string")?);
                    }
                    Some('"') => break w.push('"'),
                    Some(ch) => w.push(ch),
                    None => bail!("unclosed string in {{{{{body}}}}}"),
                }
            }
            out.push(w);
        } else {
            let mut w = String::new();
            while let Some(&ch) = chars.peek() {
                if SPACE.contains(&ch) || ch == '|' || ch == '"' {
                    break;
                }
                w.push(ch);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

fn operand(word: &str) -> Result<Operand> {
    let field = |from_root: bool, p: &str| Operand::Field {
        from_root,
        path: p
            .split('.')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    };
    Ok(if word == "." || word == "$" {
        field(word == "$", "")
    } else if let Some(p) = word.strip_prefix("$.") {
        field(true, p)
    } else if let Some(p) = word.strip_prefix('.') {
        field(false, p)
    } else if word.starts_with('"') {
        Operand::Str(serde_json::from_str(word).with_context(|| format!("string {word}"))?)
    } else if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        Operand::Int(word.parse().with_context(|| format!("number {word}"))?)
    } else if word.chars().all(|c| c.is_ascii_alphanumeric()) {
        Operand::Func(word.to_string())
    } else {
        bail!("unsupported operand {word:?} (variables, parentheses and methods are outside the subset)")
    })
}

fn pipeline(words: &[String]) -> Result<Pipeline> {
    let mut out = Vec::new();
    for part in words.split(|w| w == "|") {
        if part.is_empty() {
            bail!("empty command in pipeline {words:?}");
        }
        out.push(
            part.iter()
                .map(|w| operand(w))
                .collect::<Result<Command>>()?,
        );
    }
    Ok(out)
}

/// How a list of nodes ended.
enum Stop {
    Eof,
    End,
    Else(Vec<String>),
}

struct Parser {
    toks: std::vec::IntoIter<Tok>,
    defines: BTreeMap<String, Vec<Node>>,
}

impl Parser {
    fn list(&mut self) -> Result<(Vec<Node>, Stop)> {
        let mut nodes = Vec::new();
        while let Some(tok) = self.toks.next() {
            let words = match tok {
                Tok::Text(t) if t.is_empty() => continue,
                Tok::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Tok::Action(w) => w,
            };
            let Some((head, rest)) = words.split_first() else {
                bail!("empty action {{{{}}}}");
            };
            match head.as_str() {
                "end" => return Ok((nodes, Stop::End)),
                "else" => return Ok((nodes, Stop::Else(rest.to_vec()))),
                "if" => nodes.push(self.if_chain(rest)?),
                "range" => {
                    let (body, stop) = self.list()?;
                    if !matches!(stop, Stop::End) {
                        bail!("range needs a plain {{{{end}}}} (range/else is outside the subset)");
                    }
                    nodes.push(Node::Range(pipeline(rest)?, body));
                }
                "define" => {
                    let [name] = rest else {
                        bail!("define takes one name: {words:?}");
                    };
                    let name: String = serde_json::from_str(name).context("define name")?;
                    let (body, stop) = self.list()?;
                    if !matches!(stop, Stop::End) {
                        bail!("define {name:?} not closed by {{{{end}}}}");
                    }
                    self.defines.insert(name, body);
                }
                "with" | "template" | "block" | "break" | "continue" => {
                    bail!("{{{{{head}}}}} is outside the supported template subset")
                }
                _ => nodes.push(Node::Output(pipeline(&words)?)),
            }
        }
        Ok((nodes, Stop::Eof))
    }

    fn if_chain(&mut self, cond: &[String]) -> Result<Node> {
        let mut branches = Vec::new();
        let mut cond = cond.to_vec();
        loop {
            let (body, stop) = self.list()?;
            branches.push((pipeline(&cond)?, body));
            match stop {
                Stop::End => return Ok(Node::If(branches, Vec::new())),
                Stop::Else(w) if w.is_empty() => {
                    let (body, stop) = self.list()?;
                    if !matches!(stop, Stop::End) {
                        bail!("else not closed by {{{{end}}}}");
                    }
                    return Ok(Node::If(branches, body));
                }
                Stop::Else(w) if w.first().is_some_and(|h| h == "if") => cond = w[1..].to_vec(),
                Stop::Else(w) => bail!("unsupported {{{{else {w:?}}}}}"),
                Stop::Eof => bail!("if not closed by {{{{end}}}}"),
            }
        }
    }
}

/// Parses one template file.
pub fn parse(src: &str) -> Result<Parsed> {
    let mut p = Parser {
        toks: lex(src)?.into_iter(),
        defines: BTreeMap::new(),
    };
    let (nodes, stop) = p.list()?;
    if !matches!(stop, Stop::Eof) {
        bail!("{{{{end}}}} or {{{{else}}}} without an opening action");
    }
    Ok(Parsed {
        nodes,
        defines: p.defines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_markers_remove_whitespace_on_their_side_only() {
        let p = parse("a:\n  {{- .x }}\n{{ .y -}}\n  b").unwrap();
        let f = |n: &str| Operand::Field {
            from_root: false,
            path: vec![n.into()],
        };
        assert_eq!(
            p.nodes,
            vec![
                Node::Text("a:".into()),
                Node::Output(vec![vec![f("x")]]),
                Node::Text("\n".into()),
                Node::Output(vec![vec![f("y")]]),
                Node::Text("b".into()),
            ]
        );
    }

    #[test]
    fn outside_the_subset_is_an_error_not_a_guess() {
        for src in [
            "{{ with .x }}{{ end }}",
            "{{ $v := 1 }}",
            "{{ (.x) }}",
            "{{ if .x }}",
        ] {
            assert!(parse(src).is_err(), "{src}");
        }
    }
}

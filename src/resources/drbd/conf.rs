//! drbd.conf syntax, as `drbdadm dump RES` prints it (and as `/etc/drbd.d/*.res` are written),
//! and the few settings of one resource that decide whether twinbeat's timings and fencing can
//! be honoured: `ping-int`, `ping-timeout`, `timeout`, the fencing policy and the fence-peer
//! handler. Pure: the caller runs `drbdadm`.
//!
//! The grammar is small: `keyword args... ;` options and `keyword args... { ... }` sections,
//! `#` comments to the end of the line, double-quoted strings with backslash escapes.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Option { name: String, args: Vec<String> },
    Section(Section),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub keyword: String,
    pub args: Vec<String>,
    pub body: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ConfError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Semi,
}

fn tokens(text: &str) -> Result<Vec<(usize, Tok)>, ConfError> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '{' => out.push((line, Tok::Open)),
            '}' => out.push((line, Tok::Close)),
            ';' => out.push((line, Tok::Semi)),
            '"' => {
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(ConfError {
                                line: start,
                                message: "a quoted string is not closed".into(),
                            })
                        }
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e) => s.push(e),
                            None => {
                                return Err(ConfError {
                                    line: start,
                                    message: "a quoted string ends in a backslash".into(),
                                })
                            }
                        },
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            s.push(c);
                        }
                    }
                }
                out.push((start, Tok::Word(s)));
            }
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"' | '#') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push((line, Tok::Word(s)));
            }
        }
    }
    Ok(out)
}

/// Parses drbd.conf text into its options and sections.
pub fn parse(text: &str) -> Result<Vec<Item>, ConfError> {
    let toks = tokens(text)?;
    let mut at = 0;
    let items = parse_items(&toks, &mut at, None)?;
    Ok(items)
}

fn parse_items(
    toks: &[(usize, Tok)],
    at: &mut usize,
    open: Option<(usize, &str)>,
) -> Result<Vec<Item>, ConfError> {
    let mut items = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut first_line = 0;
    while let Some((line, t)) = toks.get(*at) {
        *at += 1;
        match t {
            Tok::Word(w) => {
                if words.is_empty() {
                    first_line = *line;
                }
                words.push(w.clone());
            }
            Tok::Semi => {
                // A stray `;` after a section's `}` is accepted, as drbdadm does.
                if let Some((name, args)) = words.split_first() {
                    items.push(Item::Option {
                        name: name.clone(),
                        args: args.to_vec(),
                    });
                }
                words.clear();
            }
            Tok::Open => {
                let Some((keyword, args)) = words.split_first() else {
                    return Err(ConfError {
                        line: *line,
                        message: "`{` without a section keyword before it".into(),
                    });
                };
                let (keyword, args) = (keyword.clone(), args.to_vec());
                words.clear();
                let body = parse_items(toks, at, Some((*line, &keyword)))?;
                items.push(Item::Section(Section {
                    keyword,
                    args,
                    body,
                }));
            }
            Tok::Close => {
                if !words.is_empty() {
                    return Err(ConfError {
                        line: first_line,
                        message: format!("`{}` is not ended by `;`", words.join(" ")),
                    });
                }
                return match open {
                    Some(_) => Ok(items),
                    None => Err(ConfError {
                        line: *line,
                        message: "`}` without an open section".into(),
                    }),
                };
            }
        }
    }
    if !words.is_empty() {
        return Err(ConfError {
            line: first_line,
            message: format!("`{}` is not ended by `;`", words.join(" ")),
        });
    }
    match open {
        Some((line, keyword)) => Err(ConfError {
            line,
            message: format!("section `{keyword}` is not closed by `}}`"),
        }),
        None => Ok(items),
    }
}

/// DRBD 8.4's defaults (drbd.conf(5)), used when neither the resource nor `common` sets them.
pub const DEFAULT_PING_INT_S: u64 = 10;
pub const DEFAULT_PING_TIMEOUT_DS: u64 = 5;
pub const DEFAULT_TIMEOUT_DS: u64 = 60;

/// One setting's value and whether the configuration set it (`false`: DRBD's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value {
    pub value: u64,
    pub set: bool,
}

/// What twinbeat needs to know about one DRBD resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceSettings {
    pub name: String,
    /// Seconds between keep-alive pings on an idle connection.
    pub ping_int_s: Value,
    /// Tenths of a second to wait for a ping's answer.
    pub ping_timeout_ds: Value,
    /// Tenths of a second to wait for any answer while requests are in flight.
    pub timeout_ds: Value,
    /// `fencing` (8.4: disk section; 9: net section): dont-care, resource-only,
    /// resource-and-stonith. `None`: not set (dont-care).
    pub fencing: Option<String>,
    /// The `fence-peer` handler's command line, if any.
    pub fence_peer: Option<String>,
}

impl ResourceSettings {
    /// The longest DRBD may take to notice a silently dead peer and drop the connection: the
    /// next ping on an idle link plus its timeout, or `timeout` with writes in flight.
    pub fn detection_ms(&self) -> u64 {
        let ping = self.ping_int_s.value * 1_000 + self.ping_timeout_ds.value * 100;
        ping.max(self.timeout_ds.value * 100)
    }

    /// Fencing is on and the handler is twinbeat's.
    pub fn fences_through_twinbeat(&self) -> bool {
        self.fencing_on() && self.handler_is_twinbeat()
    }

    pub fn fencing_on(&self) -> bool {
        matches!(
            self.fencing.as_deref(),
            Some("resource-only" | "resource-and-stonith")
        )
    }

    pub fn handler_is_twinbeat(&self) -> bool {
        self.fence_peer.as_deref().is_some_and(|h| {
            let mut words = h.split_whitespace();
            let prog = words.next().unwrap_or("");
            prog.rsplit('/').next() == Some("twinbeat") && words.any(|w| w == "fence-peer")
        })
    }
}

fn find_resource<'a>(items: &'a [Item], name: &str) -> Option<&'a Section> {
    items.iter().find_map(|i| match i {
        Item::Section(s)
            if s.keyword == "resource" && s.args.first().map(String::as_str) == Some(name) =>
        {
            Some(s)
        }
        _ => None,
    })
}

fn section<'a>(items: &'a [Item], keyword: &str) -> Option<&'a Section> {
    items.iter().find_map(|i| match i {
        Item::Section(s) if s.keyword == keyword => Some(s),
        _ => None,
    })
}

fn option<'a>(items: &'a [Item], name: &str) -> Option<&'a [String]> {
    items.iter().find_map(|i| match i {
        Item::Option { name: n, args } if n == name => Some(args.as_slice()),
        _ => None,
    })
}

/// Extracts resource `name`'s settings; values set in the resource win over `common`.
pub fn resource_settings(items: &[Item], name: &str) -> Result<ResourceSettings, String> {
    let res = find_resource(items, name).ok_or_else(|| {
        let known: Vec<&str> = items
            .iter()
            .filter_map(|i| match i {
                Item::Section(s) if s.keyword == "resource" => s.args.first().map(String::as_str),
                _ => None,
            })
            .collect();
        if known.is_empty() {
            format!("no `resource {name}` section")
        } else {
            format!("no `resource {name}` section (found: {})", known.join(", "))
        }
    })?;
    let common = section(items, "common");
    // The places a setting may be, most specific first.
    let lookup = |sections: &[&str], key: &str| -> Option<String> {
        for scope in [Some(res), common].into_iter().flatten() {
            for s in sections {
                let found = section(&scope.body, s).and_then(|sec| option(&sec.body, key));
                if let Some(args) = found {
                    return Some(args.join(" "));
                }
            }
        }
        None
    };
    let number = |key: &str, default: u64| -> Result<Value, String> {
        match lookup(&["net"], key) {
            None => Ok(Value {
                value: default,
                set: false,
            }),
            Some(v) => v
                .parse::<u64>()
                .map(|value| Value { value, set: true })
                .map_err(|_| format!("resource {name}: `{key} {v}` is not a whole number")),
        }
    };
    Ok(ResourceSettings {
        name: name.to_string(),
        ping_int_s: number("ping-int", DEFAULT_PING_INT_S)?,
        ping_timeout_ds: number("ping-timeout", DEFAULT_PING_TIMEOUT_DS)?,
        timeout_ds: number("timeout", DEFAULT_TIMEOUT_DS)?,
        fencing: lookup(&["disk", "net"], "fencing"),
        fence_peer: lookup(&["handlers"], "fence-peer"),
    })
}

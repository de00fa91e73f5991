//! The text-mode command line, for `nc` and `telnet`.
//!
//! One command per line (`\n` or `\r\n`), words separated by spaces or tabs, command names
//! case-insensitive. Each command becomes the same [`Request`] the binary protocol carries, so
//! both paths share validation and execution. The server answers each line with one line of
//! JSON.

use crate::error::{DecodeError, ErrorCode};
use crate::limits::Limits;
use crate::request::{LearnConcept, QueryByType, Request, Search, SearchQuery, StoreConcept};
use crate::types::{Attributes, ConceptId};

/// Page size of `TYPE <type>` when no limit is given.
pub const DEFAULT_TYPE_LIMIT: u32 = 100;

/// The reply to `HELP`, one command per entry.
pub const HELP: &[&str] = &[
    "HELP                          this list",
    "HEALTH                        server status",
    "STATS                         server counters",
    "GET <id>                      one concept",
    "DEL <id>                      delete a concept",
    "TYPE <type> [limit] [cursor]  concepts of a type, paged by id",
    "STORE <id> <type> <content>   store a concept without a vector",
    "LEARN <type> <content>        embed the content with the server's model and store it",
    "SEARCH <k> [type=<t>] <text>  the k concepts nearest to the text (the model embeds it)",
    "AUTH <token>                  authenticate (servers started with SUTRA_AUTH_TOKEN)",
    "QUIT                          close the connection",
];

/// A parsed text command.
#[derive(Debug, Clone, PartialEq)]
pub enum TextCommand {
    /// List the commands.
    Help,
    /// Close the connection.
    Quit,
    /// Run a request.
    Request(Request),
}

/// A line that is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// The first word is not a command.
    #[error("unknown command {command:?}; send HELP for the list")]
    UnknownCommand {
        /// The word, cut to at most 64 bytes.
        command: String,
    },
    /// The command's arguments are wrong.
    #[error("usage: {usage}")]
    Usage {
        /// The command's synopsis.
        usage: &'static str,
    },
    /// An argument is invalid.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
}

impl TextError {
    /// The error code reported in the JSON reply.
    pub fn code(&self) -> ErrorCode {
        match self {
            TextError::UnknownCommand { .. } => ErrorCode::UnknownOpcode,
            TextError::Usage { .. } => ErrorCode::InvalidArgument,
            TextError::Invalid(error) => error.code(),
        }
    }
}

fn is_separator(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits off the next word and returns it with the rest of the line.
fn next_word(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_start_matches(is_separator);
    if line.is_empty() {
        return None;
    }
    Some(line.split_once(is_separator).unwrap_or((line, "")))
}

fn expect_end(rest: &str, usage: &'static str) -> Result<(), TextError> {
    if rest.trim_matches(is_separator).is_empty() {
        Ok(())
    } else {
        Err(TextError::Usage { usage })
    }
}

fn one_id(rest: &str, limits: &Limits, usage: &'static str) -> Result<ConceptId, TextError> {
    let (id, rest) = next_word(rest).ok_or(TextError::Usage { usage })?;
    expect_end(rest, usage)?;
    Ok(ConceptId::new(id, limits)?)
}

fn check_len(field: &'static str, value: &str, max: u32) -> Result<(), DecodeError> {
    if value.len() > max as usize {
        return Err(DecodeError::TooLong {
            field,
            len: value.len() as u64,
            max: u64::from(max),
        });
    }
    Ok(())
}

/// Parses one line (without its line ending). A blank line gives `Ok(None)`.
pub fn parse_text_command(line: &str, limits: &Limits) -> Result<Option<TextCommand>, TextError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let Some((command, rest)) = next_word(line) else {
        return Ok(None);
    };
    let command_upper = command.to_ascii_uppercase();
    let parsed = match command_upper.as_str() {
        "HELP" => {
            expect_end(rest, "HELP")?;
            TextCommand::Help
        }
        "QUIT" | "EXIT" => {
            expect_end(rest, "QUIT")?;
            TextCommand::Quit
        }
        "HEALTH" | "PING" => {
            expect_end(rest, "HEALTH")?;
            TextCommand::Request(Request::Health)
        }
        "STATS" => {
            expect_end(rest, "STATS")?;
            TextCommand::Request(Request::Stats)
        }
        "GET" => TextCommand::Request(Request::GetConceptById {
            id: one_id(rest, limits, "GET <id>")?,
        }),
        "DEL" | "DELETE" => TextCommand::Request(Request::Delete {
            id: one_id(rest, limits, "DEL <id>")?,
        }),
        "TYPE" => TextCommand::Request(Request::QueryByType(parse_type(rest, limits)?)),
        "STORE" => TextCommand::Request(Request::StoreConcept(parse_store(rest, limits)?)),
        "LEARN" => TextCommand::Request(Request::LearnConcept(parse_learn(rest, limits)?)),
        "SEARCH" => TextCommand::Request(Request::Search(parse_search(rest, limits)?)),
        "AUTH" => {
            const USAGE: &str = "AUTH <token>";
            let (token, rest) = next_word(rest).ok_or(TextError::Usage { usage: USAGE })?;
            expect_end(rest, USAGE)?;
            check_len("token", token, crate::request::MAX_TOKEN_BYTES)?;
            TextCommand::Request(Request::Auth {
                token: token.to_owned(),
            })
        }
        _ => {
            let mut end = command.len().min(64);
            while !command.is_char_boundary(end) {
                end = end.saturating_sub(1);
            }
            let shown = command.get(..end).unwrap_or_default();
            return Err(TextError::UnknownCommand {
                command: shown.to_owned(),
            });
        }
    };
    Ok(Some(parsed))
}

fn parse_type(rest: &str, limits: &Limits) -> Result<QueryByType, TextError> {
    const USAGE: &str = "TYPE <type> [limit] [cursor]";
    let (concept_type, rest) = next_word(rest).ok_or(TextError::Usage { usage: USAGE })?;
    check_len("concept_type", concept_type, limits.max_name_bytes)?;
    let (limit, rest) = match next_word(rest) {
        None => (DEFAULT_TYPE_LIMIT, ""),
        Some((word, rest)) => match word.parse::<u32>() {
            Ok(limit) if limit > 0 => (limit, rest),
            _ => return Err(TextError::Usage { usage: USAGE }),
        },
    };
    let (cursor, rest) = next_word(rest).unwrap_or(("", ""));
    expect_end(rest, USAGE)?;
    check_len("cursor", cursor, limits.max_id_bytes)?;
    Ok(QueryByType {
        concept_type: concept_type.to_owned(),
        limit: limit.min(limits.max_query_limit),
        cursor: cursor.to_owned(),
    })
}

fn parse_search(rest: &str, limits: &Limits) -> Result<Search, TextError> {
    const USAGE: &str = "SEARCH <k> [type=<type>] <text>";
    let (k, rest) = next_word(rest).ok_or(TextError::Usage { usage: USAGE })?;
    let k = match k.parse::<u32>() {
        Ok(k) if (1..=limits.max_search_k).contains(&k) => k,
        _ => return Err(TextError::Usage { usage: USAGE }),
    };
    let (concept_type, rest) = match next_word(rest) {
        Some((word, after)) if word.starts_with("type=") => (&word["type=".len()..], after),
        _ => ("", rest),
    };
    let text = rest.trim_start_matches(is_separator);
    if text.is_empty() {
        return Err(TextError::Usage { usage: USAGE });
    }
    check_len("concept_type", concept_type, limits.max_name_bytes)?;
    check_len("text", text, limits.max_content_bytes)?;
    Ok(Search {
        concept_type: concept_type.to_owned(),
        include_concepts: true,
        ..Search::new(SearchQuery::Text(text.to_owned()), k)
    })
}

fn parse_learn(rest: &str, limits: &Limits) -> Result<LearnConcept, TextError> {
    const USAGE: &str = "LEARN <type> <content>";
    let (concept_type, rest) = next_word(rest).ok_or(TextError::Usage { usage: USAGE })?;
    let content = rest.trim_start_matches(is_separator);
    if content.is_empty() {
        return Err(TextError::Usage { usage: USAGE });
    }
    check_len("concept_type", concept_type, limits.max_name_bytes)?;
    check_len("content", content, limits.max_content_bytes)?;
    Ok(LearnConcept {
        concept_type: concept_type.to_owned(),
        ..LearnConcept::new(content)
    })
}

fn parse_store(rest: &str, limits: &Limits) -> Result<StoreConcept, TextError> {
    const USAGE: &str = "STORE <id> <type> <content>";
    let (id, rest) = next_word(rest).ok_or(TextError::Usage { usage: USAGE })?;
    let (concept_type, rest) = next_word(rest).ok_or(TextError::Usage { usage: USAGE })?;
    let content = rest.trim_start_matches(is_separator);
    if content.is_empty() {
        return Err(TextError::Usage { usage: USAGE });
    }
    let id = ConceptId::new(id, limits)?;
    check_len("concept_type", concept_type, limits.max_name_bytes)?;
    check_len("content", content, limits.max_content_bytes)?;
    Ok(StoreConcept {
        id,
        content: content.to_owned(),
        concept_type: concept_type.to_owned(),
        model: String::new(),
        attributes: Attributes::new(),
        embedding: None,
        ttl_seconds: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<TextCommand>, TextError> {
        parse_text_command(line, &Limits::default())
    }

    #[test]
    fn commands_are_case_insensitive_and_tolerate_crlf() {
        assert_eq!(
            parse("health\r"),
            Ok(Some(TextCommand::Request(Request::Health)))
        );
        assert_eq!(
            parse("  Stats  "),
            Ok(Some(TextCommand::Request(Request::Stats)))
        );
        assert_eq!(parse("QUIT"), Ok(Some(TextCommand::Quit)));
    }

    #[test]
    fn blank_lines_are_ignored() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse(" \t\r"), Ok(None));
    }

    #[test]
    fn get_takes_exactly_one_id() {
        let Ok(Some(TextCommand::Request(Request::GetConceptById { id }))) = parse("GET doc-1")
        else {
            panic!("GET did not parse");
        };
        assert_eq!(id.as_str(), "doc-1");
        assert_eq!(parse("GET"), Err(TextError::Usage { usage: "GET <id>" }));
        assert_eq!(
            parse("GET a b"),
            Err(TextError::Usage { usage: "GET <id>" })
        );
    }

    #[test]
    fn store_keeps_the_rest_of_the_line_as_content() {
        let Ok(Some(TextCommand::Request(Request::StoreConcept(store)))) =
            parse("STORE d1 note  hello   wide  world")
        else {
            panic!("STORE did not parse");
        };
        assert_eq!(store.id.as_str(), "d1");
        assert_eq!(store.concept_type, "note");
        assert_eq!(store.content, "hello   wide  world");
        assert!(store.embedding.is_none());
        assert!(matches!(
            parse("STORE d1 note"),
            Err(TextError::Usage { .. })
        ));
    }

    #[test]
    fn type_parses_limit_and_cursor() {
        let Ok(Some(TextCommand::Request(Request::QueryByType(query)))) = parse("TYPE note 5 d3")
        else {
            panic!("TYPE did not parse");
        };
        assert_eq!(
            (
                query.concept_type.as_str(),
                query.limit,
                query.cursor.as_str()
            ),
            ("note", 5, "d3")
        );
        let Ok(Some(TextCommand::Request(Request::QueryByType(query)))) = parse("TYPE note 999999")
        else {
            panic!("TYPE did not parse");
        };
        assert_eq!(query.limit, Limits::DEFAULT_MAX_QUERY_LIMIT);
        assert!(matches!(
            parse("TYPE note zero"),
            Err(TextError::Usage { .. })
        ));
        assert!(matches!(parse("TYPE note 0"), Err(TextError::Usage { .. })));
    }

    #[test]
    fn unknown_commands_and_long_ids_are_errors() {
        let error = parse("FLUSHALL now").unwrap_err();
        assert_eq!(error.code(), ErrorCode::UnknownOpcode);
        let long_id = "x".repeat(Limits::DEFAULT_MAX_ID_BYTES as usize + 1);
        let error = parse(&format!("GET {long_id}")).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        let ok_id = "x".repeat(Limits::DEFAULT_MAX_ID_BYTES as usize);
        assert!(parse(&format!("GET {ok_id}")).is_ok());
    }
}

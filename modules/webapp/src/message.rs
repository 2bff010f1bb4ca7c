//! A message, and the rules a new one must meet.

use serde::Serialize;

/// A stored message, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Unique, increasing, never reused (newest has the largest).
    pub id: i64,
    pub author: String,
    pub text: String,
    /// UTC, RFC 3339 with milliseconds (`2026-01-02T03:04:05.678Z`).
    pub created_at: String,
}

/// A message to store, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub author: String,
    pub text: String,
}

/// Why a new message was refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl Invalid {
    fn new(field: &'static str, message: impl Into<String>) -> Invalid {
        Invalid {
            field,
            message: message.into(),
        }
    }
}

/// Size limits for new messages.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_author: usize,
    pub max_text: usize,
}

impl Rules {
    /// Validates a JSON body: an object with string fields `author` and
    /// `text` (other fields are ignored).
    pub fn from_json(&self, v: &serde_json::Value) -> Result<NewMessage, Invalid> {
        let Some(obj) = v.as_object() else {
            return Err(Invalid::new(
                "body",
                "expected a JSON object {\"author\": …, \"text\": …}",
            ));
        };
        let field = |name: &'static str| match obj.get(name) {
            None | Some(serde_json::Value::Null) => {
                Err(Invalid::new(name, format!("missing field: {name}")))
            }
            Some(serde_json::Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(Invalid::new(name, format!("{name} must be a string"))),
        };
        let author = field("author")?;
        let text = field("text")?;
        self.check(author, text)
    }

    /// Validates form fields (absent fields count as missing).
    pub fn from_form(
        &self,
        author: Option<&str>,
        text: Option<&str>,
    ) -> Result<NewMessage, Invalid> {
        let author = author.ok_or_else(|| Invalid::new("author", "missing field: author"))?;
        let text = text.ok_or_else(|| Invalid::new("text", "missing field: text"))?;
        self.check(author, text)
    }

    /// The rules proper. The author is trimmed and may hold no control
    /// characters; the text keeps its inner whitespace (line breaks are
    /// normalized to `\n`) and may hold no control characters besides
    /// tabs and line breaks. Lengths count characters.
    pub fn check(&self, author: &str, text: &str) -> Result<NewMessage, Invalid> {
        let author = author.trim();
        if author.is_empty() {
            return Err(Invalid::new("author", "author must not be empty"));
        }
        if author.chars().count() > self.max_author {
            return Err(Invalid::new(
                "author",
                format!("author is longer than {} characters", self.max_author),
            ));
        }
        if author.chars().any(char::is_control) {
            return Err(Invalid::new(
                "author",
                "author must not contain control characters",
            ));
        }
        let text = text.replace("\r\n", "\n");
        let text = text.trim();
        if text.is_empty() {
            return Err(Invalid::new("text", "text must not be empty"));
        }
        if text.chars().count() > self.max_text {
            return Err(Invalid::new(
                "text",
                format!("text is longer than {} characters", self.max_text),
            ));
        }
        if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(Invalid::new(
                "text",
                "text must not contain control characters",
            ));
        }
        Ok(NewMessage {
            author: author.to_string(),
            text: text.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULES: Rules = Rules {
        max_author: 5,
        max_text: 10,
    };

    fn err(v: serde_json::Value) -> (&'static str, String) {
        let e = RULES.from_json(&v).unwrap_err();
        (e.field, e.message)
    }

    #[test]
    fn accepts_and_normalizes() {
        let m = RULES
            .from_json(&json!({ "author": " Ann ", "text": "a\r\nb\t", "extra": 1 }))
            .unwrap();
        assert_eq!(m.author, "Ann");
        assert_eq!(m.text, "a\nb");
        // Characters, not bytes.
        assert!(RULES.check("ééééé", "éééééééééé").is_ok());
    }

    #[test]
    fn says_what_is_wrong() {
        assert_eq!(err(json!([1])).0, "body");
        assert_eq!(
            err(json!({ "text": "x" })),
            ("author", "missing field: author".into())
        );
        assert_eq!(
            err(json!({ "author": "a" })),
            ("text", "missing field: text".into())
        );
        assert_eq!(
            err(json!({ "author": "a", "text": null })),
            ("text", "missing field: text".into())
        );
        assert_eq!(
            err(json!({ "author": 1, "text": "x" })),
            ("author", "author must be a string".into())
        );
        assert_eq!(
            err(json!({ "author": "a", "text": "  \n" })),
            ("text", "text must not be empty".into())
        );
        assert_eq!(
            err(json!({ "author": "a", "text": "12345678901" })),
            ("text", "text is longer than 10 characters".into())
        );
        assert_eq!(err(json!({ "author": "", "text": "x" })).0, "author");
        assert_eq!(err(json!({ "author": "abcdef", "text": "x" })).0, "author");
        assert_eq!(err(json!({ "author": "a\u{7}", "text": "x" })).0, "author");
        assert_eq!(err(json!({ "author": "a", "text": "x\u{0}" })).0, "text");
        assert_eq!(
            RULES.from_form(None, Some("x")).unwrap_err().field,
            "author"
        );
        assert_eq!(RULES.from_form(Some("a"), None).unwrap_err().field, "text");
    }
}

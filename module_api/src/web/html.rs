//! HTML that escapes user text by construction: [`escape`], the
//! [`ToHtml`] values, [`Html`] built from static markup and escaped
//! values, and [`render`] for `{{name}}` templates.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values:
/// `&`, `<`, `>`, `"` and `'`.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    escape_into(&mut out, text);
    Cow::Owned(out)
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Something that can go into HTML. Text and numbers are escaped; an
/// [`Html`] value is already safe and goes in as is.
pub trait ToHtml {
    /// Appends `self` to `out` as HTML.
    fn write_html(&self, out: &mut String);
}

impl ToHtml for str {
    fn write_html(&self, out: &mut String) {
        escape_into(out, self);
    }
}

impl ToHtml for String {
    fn write_html(&self, out: &mut String) {
        escape_into(out, self);
    }
}

impl<T: ToHtml + ?Sized> ToHtml for &T {
    fn write_html(&self, out: &mut String) {
        (**self).write_html(out);
    }
}

macro_rules! to_html_display {
    ($($t:ty),*) => {$(
        impl ToHtml for $t {
            fn write_html(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
to_html_display!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl ToHtml for Html {
    fn write_html(&self, out: &mut String) {
        out.push_str(&self.0);
    }
}

/// HTML that is safe to send: built only from static markup (written by the
/// module author) and escaped values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Html(String);

impl Html {
    /// Empty.
    pub fn new() -> Html {
        Html(String::new())
    }

    /// Appends trusted markup. Only `&'static str`: markup cannot come from
    /// a request.
    pub fn markup(&mut self, markup: &'static str) -> &mut Html {
        self.0.push_str(markup);
        self
    }

    /// Appends a value: text escaped, [`Html`] as is.
    pub fn push(&mut self, value: impl ToHtml) -> &mut Html {
        value.write_html(&mut self.0);
        self
    }

    /// The markup.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The markup, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Fills a template: every `{{name}}` in `template` is replaced by the
/// value named `name` in `vars`, through [`ToHtml`] (text escaped, [`Html`]
/// inserted as is). Templates are `&'static str` (typically
/// `include_str!("page.html")`), so they are the module author's markup.
///
/// A placeholder without a value is a bug in the module: it panics (the
/// SDK answers 500 and counts a fault).
///
/// ```
/// use module_api::web::{render, ToHtml};
/// let page = render("<p>{{who}} said {{what}}</p>", &[("who", &"Ann"), ("what", &"<b>hi</b>")]);
/// assert_eq!(page.as_str(), "<p>Ann said &lt;b&gt;hi&lt;/b&gt;</p>");
/// ```
pub fn render(template: &'static str, vars: &[(&str, &dyn ToHtml)]) -> Html {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .unwrap_or_else(|| panic!("template: unclosed {{{{ in {:?}", &rest[open..]));
        let name = after[..close].trim();
        let (_, value) = vars
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("template: no value for {{{{{name}}}}}"));
        value.write_html(&mut out);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Html(out)
}

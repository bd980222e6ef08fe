//! Structured Field Values (RFC 8941): the parts HTTP message signatures need — dictionaries,
//! inner lists, items with parameters — parsed strictly and serialized canonically.
//!
//! The parser is linear in its input: a dictionary has at most [`MAX_MEMBERS`] members, an
//! inner list at most [`MAX_INNER_LIST_ITEMS`] items and an item or inner list at most
//! [`MAX_PARAMS`] parameters (beyond, the value is refused), so the lookups that find a
//! repeated key (whose later value wins) cost a bounded number of comparisons.

use std::fmt::Write as _;

use base64::Engine as _;

/// Most members of a dictionary (signature labels, in `Signature-Input` and `Signature`).
pub const MAX_MEMBERS: usize = 32;
/// Most items of an inner list (components covered by one signature).
pub const MAX_INNER_LIST_ITEMS: usize = 64;
/// Most parameters of one item or inner list.
pub const MAX_PARAMS: usize = 16;

/// A bare item.
#[derive(Debug, Clone, PartialEq)]
pub enum BareItem {
    /// `42`, `-7`.
    Integer(i64),
    /// `4.5` (kept as thousandths, the precision RFC 8941 allows).
    Decimal(i64),
    /// `"text"`.
    String(String),
    /// `token`, `*foo/bar`.
    Token(String),
    /// `:base64:`.
    ByteSeq(Vec<u8>),
    /// `?1` / `?0`.
    Boolean(bool),
}

/// Parameters: ordered `;key=value` pairs.
pub type Params = Vec<(String, BareItem)>;

/// An item with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The value.
    pub bare: BareItem,
    /// Its parameters.
    pub params: Params,
}

/// An inner list with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct InnerList {
    /// The items.
    pub items: Vec<Item>,
    /// The list's parameters.
    pub params: Params,
}

/// A dictionary or list member.
#[derive(Debug, Clone, PartialEq)]
pub enum Member {
    /// A single item.
    Item(Item),
    /// An inner list.
    InnerList(InnerList),
}

/// A dictionary: ordered, later duplicates overwrite earlier values in place.
pub type Dictionary = Vec<(String, Member)>;

/// The value of parameter `name`, if present.
pub fn param<'a>(params: &'a Params, name: &str) -> Option<&'a BareItem> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// The dictionary member `name`, if present.
pub fn member<'a>(dict: &'a Dictionary, name: &str) -> Option<&'a Member> {
    dict.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

type PResult<T> = Result<T, String>;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn key(&mut self) -> PResult<String> {
        let start = self.pos;
        match self.peek() {
            Some(c) if c.is_ascii_lowercase() || c == b'*' => self.pos += 1,
            _ => return Err(format!("expected a key at {}", self.pos)),
        }
        while let Some(c) = self.peek() {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c) {
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    fn params(&mut self) -> PResult<Params> {
        let mut params: Params = Vec::new();
        while self.eat(b';') {
            self.skip_sp();
            let k = self.key()?;
            let v = if self.eat(b'=') {
                self.bare_item()?
            } else {
                BareItem::Boolean(true)
            };
            if let Some(slot) = params.iter_mut().find(|(pk, _)| *pk == k) {
                slot.1 = v;
            } else if params.len() == MAX_PARAMS {
                return Err(format!("more than {MAX_PARAMS} parameters"));
            } else {
                params.push((k, v));
            }
        }
        Ok(params)
    }

    fn bare_item(&mut self) -> PResult<BareItem> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b':') => self.byte_seq(),
            Some(b'?') => {
                self.pos += 1;
                match self.peek() {
                    Some(b'1') => {
                        self.pos += 1;
                        Ok(BareItem::Boolean(true))
                    }
                    Some(b'0') => {
                        self.pos += 1;
                        Ok(BareItem::Boolean(false))
                    }
                    _ => Err("bad boolean".into()),
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => self.token(),
            _ => Err(format!("expected an item at {}", self.pos)),
        }
    }

    fn number(&mut self) -> PResult<BareItem> {
        let neg = self.eat(b'-');
        let start = self.pos;
        let mut int_digits = 0;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
            int_digits += 1;
        }
        if int_digits == 0 {
            return Err("expected digits".into());
        }
        let int_part = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("0");
        if self.eat(b'.') {
            if int_digits > 12 {
                return Err("decimal too long".into());
            }
            let fstart = self.pos;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
            let frac = std::str::from_utf8(&self.s[fstart..self.pos]).unwrap_or("");
            if frac.is_empty() || frac.len() > 3 {
                return Err("bad decimal fraction".into());
            }
            let mut thousandths: i64 = int_part.parse::<i64>().map_err(|e| e.to_string())? * 1000;
            let scale = [100, 10, 1];
            for (i, d) in frac.bytes().enumerate() {
                thousandths += (d - b'0') as i64 * scale[i];
            }
            Ok(BareItem::Decimal(if neg { -thousandths } else { thousandths }))
        } else {
            if int_digits > 15 {
                return Err("integer too long".into());
            }
            let v: i64 = int_part.parse().map_err(|e: std::num::ParseIntError| e.to_string())?;
            Ok(BareItem::Integer(if neg { -v } else { v }))
        }
    }

    fn string(&mut self) -> PResult<BareItem> {
        self.pos += 1; // opening quote
        // Fast path: no escapes before the closing quote.
        let rest = &self.s[self.pos..];
        if let Some(end) = rest.iter().position(|&c| c == b'"' || c == b'\\')
            && rest[end] == b'"'
            && rest[..end].iter().all(|c| (0x20..0x7f).contains(c))
        {
            let s = String::from_utf8_lossy(&rest[..end]).into_owned();
            self.pos += end + 1;
            return Ok(BareItem::String(s));
        }
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c as char);
                            self.pos += 1;
                        }
                        _ => return Err("bad escape in string".into()),
                    }
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(BareItem::String(out));
                }
                Some(c) if (0x20..0x7f).contains(&c) => {
                    out.push(c as char);
                    self.pos += 1;
                }
                Some(_) => return Err("non-printable character in string".into()),
            }
        }
    }

    fn token(&mut self) -> PResult<BareItem> {
        let start = self.pos;
        self.pos += 1;
        while let Some(c) = self.peek() {
            if is_tchar(c) || c == b':' || c == b'/' {
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(BareItem::Token(
            String::from_utf8_lossy(&self.s[start..self.pos]).into_owned(),
        ))
    }

    fn byte_seq(&mut self) -> PResult<BareItem> {
        self.pos += 1;
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == b':' {
                break;
            }
            if !(c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=') {
                return Err("bad character in byte sequence".into());
            }
            self.pos += 1;
        }
        if !self.eat(b':') {
            return Err("unterminated byte sequence".into());
        }
        let b64 = &self.s[start..self.pos - 1];
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(BareItem::ByteSeq)
            .map_err(|_| "bad base64 in byte sequence".into())
    }

    fn item(&mut self) -> PResult<Item> {
        let bare = self.bare_item()?;
        let params = self.params()?;
        Ok(Item { bare, params })
    }

    fn inner_list(&mut self) -> PResult<InnerList> {
        self.pos += 1; // (
        let mut items = Vec::new();
        loop {
            self.skip_sp();
            if self.eat(b')') {
                let params = self.params()?;
                return Ok(InnerList { items, params });
            }
            if items.len() == MAX_INNER_LIST_ITEMS {
                return Err(format!("more than {MAX_INNER_LIST_ITEMS} items in an inner list"));
            }
            items.push(self.item()?);
            match self.peek() {
                Some(b' ' | b')') => {}
                _ => return Err("expected SP or ) in inner list".into()),
            }
        }
    }

    fn member(&mut self) -> PResult<Member> {
        if self.peek() == Some(b'(') {
            Ok(Member::InnerList(self.inner_list()?))
        } else {
            Ok(Member::Item(self.item()?))
        }
    }

    fn finish(&mut self) -> PResult<()> {
        self.skip_sp();
        if self.pos == self.s.len() {
            Ok(())
        } else {
            Err(format!("trailing characters at {}", self.pos))
        }
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Parses a dictionary field value (the field lines already joined with `,`).
pub fn parse_dictionary(input: &str) -> Result<Dictionary, String> {
    let mut p = Parser {
        s: input.as_bytes(),
        pos: 0,
    };
    let mut dict: Dictionary = Vec::new();
    p.skip_sp();
    if p.pos == p.s.len() {
        return Ok(dict);
    }
    loop {
        let k = p.key()?;
        let v = if p.eat(b'=') {
            p.member()?
        } else {
            Member::Item(Item {
                bare: BareItem::Boolean(true),
                params: p.params()?,
            })
        };
        if let Some(slot) = dict.iter_mut().find(|(dk, _)| *dk == k) {
            slot.1 = v;
        } else if dict.len() == MAX_MEMBERS {
            return Err(format!("more than {MAX_MEMBERS} dictionary members"));
        } else {
            dict.push((k, v));
        }
        p.skip_ows();
        if p.pos == p.s.len() {
            return Ok(dict);
        }
        if !p.eat(b',') {
            return Err(format!("expected , at {}", p.pos));
        }
        p.skip_ows();
        if p.pos == p.s.len() {
            return Err("trailing comma".into());
        }
    }
}

/// Parses one item (e.g. a component identifier `"@query-param";name="id"`).
pub fn parse_item(input: &str) -> Result<Item, String> {
    let mut p = Parser {
        s: input.as_bytes(),
        pos: 0,
    };
    p.skip_sp();
    let item = p.item()?;
    p.finish()?;
    Ok(item)
}

/// Serializes a bare item.
pub fn write_bare_item(out: &mut String, v: &BareItem) {
    match v {
        BareItem::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        BareItem::Decimal(t) => {
            let sign = if *t < 0 { "-" } else { "" };
            let a = t.unsigned_abs();
            let (int, frac) = (a / 1000, a % 1000);
            let mut f = format!("{frac:03}");
            while f.len() > 1 && f.ends_with('0') {
                f.pop();
            }
            let _ = write!(out, "{sign}{int}.{f}");
        }
        BareItem::String(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        BareItem::Token(t) => out.push_str(t),
        BareItem::ByteSeq(b) => {
            out.push(':');
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
            out.push(':');
        }
        BareItem::Boolean(b) => out.push_str(if *b { "?1" } else { "?0" }),
    }
}

/// Serializes parameters.
pub fn write_params(out: &mut String, params: &Params) {
    for (k, v) in params {
        out.push(';');
        out.push_str(k);
        if *v != BareItem::Boolean(true) {
            out.push('=');
            write_bare_item(out, v);
        }
    }
}

/// Serializes an item with its parameters.
pub fn write_item(out: &mut String, item: &Item) {
    write_bare_item(out, &item.bare);
    write_params(out, &item.params);
}

/// Serializes an inner list with its parameters.
pub fn write_inner_list(out: &mut String, list: &InnerList) {
    out.push('(');
    for (i, item) in list.items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_item(out, item);
    }
    out.push(')');
    write_params(out, &list.params);
}

/// Serializes a dictionary member value.
pub fn write_member(out: &mut String, m: &Member) {
    match m {
        Member::Item(i) => write_item(out, i),
        Member::InnerList(l) => write_inner_list(out, l),
    }
}

/// Serializes a dictionary.
pub fn write_dictionary(out: &mut String, dict: &Dictionary) {
    for (i, (k, v)) in dict.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        match v {
            Member::Item(Item {
                bare: BareItem::Boolean(true),
                params,
            }) => write_params(out, params),
            _ => {
                out.push('=');
                write_member(out, v);
            }
        }
    }
}

/// True if `s` is a valid dictionary key (label).
pub fn is_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0] == b'*')
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_round_trip() {
        let input = r#"sig1=("@method" "@authority" "@path" "content-digest");created=1618884475;keyid="test-key-ecc-p256", sig2=:AAEC:, flag, n=-4.5;a;b=?0"#;
        let d = parse_dictionary(input).unwrap();
        let mut out = String::new();
        write_dictionary(&mut out, &d);
        assert_eq!(out, input);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "a=(",
            "a=\"x",
            "A=1",
            "a=1,",
            "a=:@@:",
            "a=1 b=2",
            "a=?2",
            "a=1234567890123456",
        ] {
            assert!(parse_dictionary(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn item_with_params() {
        let i = parse_item(r#""@query-param";name="Pet""#).unwrap();
        assert_eq!(i.bare, BareItem::String("@query-param".into()));
        assert_eq!(param(&i.params, "name"), Some(&BareItem::String("Pet".into())));
        let mut s = String::new();
        write_item(&mut s, &i);
        assert_eq!(s, r#""@query-param";name="Pet""#);
    }

    #[test]
    fn decimals() {
        let d = parse_dictionary("a=1.5, b=-0.25, c=2.0").unwrap();
        let mut out = String::new();
        write_dictionary(&mut out, &d);
        assert_eq!(out, "a=1.5, b=-0.25, c=2.0");
    }
}

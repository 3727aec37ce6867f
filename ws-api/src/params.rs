//! Request parameters as Binance takes them: from the query string, a form body, or a WS API
//! `params` object, checked with Binance's error codes and texts.

use std::str::FromStr;

use rust_decimal::Decimal;

use crate::error::ApiError;

/// Most parameters one request may carry (Binance endpoints take fewer than 30).
pub const MAX_PARAMS: usize = 64;

const DECIMAL_RANGE: &str = "^([0-9]{1,20})(\\.[0-9]{1,20})?$";
const INTEGER_RANGE: &str = "^[0-9]{1,20}$";

#[derive(Clone, Debug, Default)]
pub struct Params {
    items: Vec<(String, String)>,
}

impl Params {
    /// Query string and form body together. A name given twice in one of them is -1101; a
    /// name in both takes the query string's value, as Binance does.
    pub fn parse(query: &str, body: &str) -> Result<Params, ApiError> {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            p.push(k.into_owned(), v.into_owned())?;
        }
        let from_query = p.items.len();
        let mut body_names: Vec<String> = Vec::new();
        for (k, v) in form_urlencoded::parse(body.as_bytes()) {
            if body_names.iter().any(|x| *x == k) {
                return Err(ApiError::duplicate_param());
            }
            body_names.push(k.clone().into_owned());
            if !p.items[..from_query].iter().any(|(x, _)| *x == k) {
                p.push(k.into_owned(), v.into_owned())?;
            }
        }
        Ok(p)
    }

    /// A WS API `params` object: strings, numbers and booleans, as their text.
    pub fn from_json(obj: &serde_json::Map<String, serde_json::Value>) -> Result<Params, ApiError> {
        let mut p = Params::default();
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => continue,
                _ => return Err(ApiError::illegal_chars(k, "string, number or boolean")),
            };
            p.push(k.clone(), s)?;
        }
        Ok(p)
    }

    fn push(&mut self, k: String, v: String) -> Result<(), ApiError> {
        if self.items.iter().any(|(x, _)| *x == k) {
            return Err(ApiError::duplicate_param());
        }
        if self.items.len() == MAX_PARAMS {
            return Err(ApiError::new(
                400,
                -1101,
                "Too many parameters sent for this endpoint.",
            ));
        }
        self.items.push((k, v));
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(|(k, _)| k.as_str())
    }

    /// The value; an empty value counts as not sent.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn has(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    pub fn req(&self, k: &str) -> Result<&str, ApiError> {
        self.get(k).ok_or_else(|| ApiError::mandatory(k))
    }

    pub fn u64(&self, k: &str) -> Result<Option<u64>, ApiError> {
        self.get(k)
            .map(|v| {
                if v.len() > 20 || !v.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(ApiError::illegal_chars(k, INTEGER_RANGE));
                }
                v.parse::<u64>()
                    .map_err(|_| ApiError::illegal_chars(k, INTEGER_RANGE))
            })
            .transpose()
    }

    /// An integer bounded to `[min, max]` (Binance's `limit`), defaulting to `default`.
    pub fn bounded(&self, k: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        let v = self.u64(k)?.unwrap_or(default);
        if v < min || v > max {
            return Err(ApiError::new(
                400,
                -1100,
                format!(
                    "Illegal characters found in parameter '{k}'; legal range is '{min}..={max}'."
                ),
            ));
        }
        Ok(v)
    }

    pub fn decimal(&self, k: &str) -> Result<Option<Decimal>, ApiError> {
        self.get(k).map(|v| parse_decimal(k, v)).transpose()
    }

    pub fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        self.get(k)
            .map(|v| match v {
                "true" | "TRUE" => Ok(true),
                "false" | "FALSE" => Ok(false),
                _ => Err(ApiError::illegal_chars(k, "true, false")),
            })
            .transpose()
    }

    /// The symbol, checked for Binance's character range (not that it exists).
    pub fn symbol(&self) -> Result<&str, ApiError> {
        let s = self.req("symbol")?;
        check_symbol(s)?;
        Ok(s)
    }
}

/// At most `limit` of `v` (oldest first), as Binance pages history: from the start when the
/// request says where to start (`fromId`, `startTime`), else the most recent ones.
pub fn page<T>(mut v: Vec<T>, limit: usize, from_start: bool) -> Vec<T> {
    if !from_start && v.len() > limit {
        v.drain(..v.len() - limit);
    }
    v.truncate(limit);
    v
}

pub fn check_symbol(s: &str) -> Result<(), ApiError> {
    if s.is_empty()
        || s.len() > 20
        || !s
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || b"-_.".contains(&c))
    {
        return Err(ApiError::illegal_chars("symbol", "^[A-Z0-9-_.]{1,20}$"));
    }
    Ok(())
}

/// A plain decimal as Binance takes it: digits, at most one point, no sign or exponent.
pub fn parse_decimal(k: &str, v: &str) -> Result<Decimal, ApiError> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    if int.is_empty()
        || int.len() > 20
        || frac.len() > 20
        || !digits(int)
        || !digits(frac)
        || (v.contains('.') && frac.is_empty())
    {
        return Err(ApiError::illegal_chars(k, DECIMAL_RANGE));
    }
    Decimal::from_str(v).map_err(|_| ApiError::illegal_chars(k, DECIMAL_RANGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_parse_with_binance_errors() {
        let p = Params::parse("symbol=BTCUSDT&limit=5", "price=1.50&x=").unwrap();
        assert_eq!(p.symbol().unwrap(), "BTCUSDT");
        assert_eq!(p.u64("limit").unwrap(), Some(5));
        assert_eq!(p.decimal("price").unwrap(), Some(Decimal::new(150, 2)));
        assert_eq!(p.get("x"), None);
        assert_eq!(p.req("x").unwrap_err().code, -1102);
        assert_eq!(
            Params::parse("a=1&a=2", "").unwrap_err().msg,
            "Duplicate values for a parameter detected."
        );
        assert_eq!(Params::parse("", "a=1&a=2").unwrap_err().code, -1101);
        // In both: the query string's value, as Binance.
        assert_eq!(Params::parse("a=1", "a=2").unwrap().get("a"), Some("1"));
        let bad = Params::parse("price=-1&limit=1e3&symbol=btc", "").unwrap();
        assert_eq!(
            bad.decimal("price").unwrap_err().msg,
            "Illegal characters found in parameter 'price'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'."
        );
        assert_eq!(bad.u64("limit").unwrap_err().code, -1100);
        assert_eq!(bad.symbol().unwrap_err().code, -1100);
        for v in ["1.", ".5", "1e5", "0x10", "1.2.3", " 1"] {
            assert!(parse_decimal("q", v).is_err(), "{v}");
        }
        assert_eq!(page(vec![1, 2, 3, 4, 5], 2, false), [4, 5]);
        assert_eq!(page(vec![1, 2, 3, 4, 5], 2, true), [1, 2]);
        assert_eq!(page(vec![1, 2], 5, false), [1, 2]);
        let many: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=1&")).collect();
        assert_eq!(Params::parse(&many, "").unwrap_err().code, -1101);
    }
}

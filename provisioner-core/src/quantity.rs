//! Exact `resource.Quantity` parsing, comparison and formatting.
//!
//! Kubernetes writes storage sizes as quantities such as `10Gi`, `1.5G`, `800E` or `1e9`.
//! [`Quantity`] parses them the way apimachinery's `ParseQuantity` does and compares them
//! exactly, with no floating point and no overflow, so that `1G < 1000Mi < 1Gi` and
//! `800E < 950E` hold:
//!
//! ```
//! use provisioner_core::quantity::Quantity;
//!
//! let g: Quantity = "1G".parse()?;
//! let mi: Quantity = "1000Mi".parse()?;
//! let gi: Quantity = "1Gi".parse()?;
//! assert!(g < mi && mi < gi);
//! assert_eq!("1.5Gi".parse::<Quantity>()?.to_string(), "1536Mi");
//! assert!("800E".parse::<Quantity>()? < "950E".parse::<Quantity>()?);
//! # Ok::<(), provisioner_core::quantity::QuantityError>(())
//! ```
//!
//! Parsing keeps apimachinery's quirks, because the API server applies them to every object
//! it stores: a value finer than a nanounit is rounded away from zero to the next nanounit
//! (`0.9n` is `1n`), a binary-suffixed value is capped at 2^63-1 (`9Ei`), and a number may be
//! empty (`.` and `Ki` are zero). Everything is kept as an exact decimal, so no other
//! rounding ever happens.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Why a string is not a valid quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty.
    #[error("quantity is empty")]
    Empty,
    /// The string is not `<sign><number><suffix>`.
    #[error(
        "quantity {input:?} is malformed: expected an optional sign, a decimal number and one suffix"
    )]
    Malformed {
        /// The rejected string.
        input: String,
    },
    /// The suffix is not one Kubernetes knows (suffixes are case-sensitive: `k`, not `K`).
    #[error(
        "quantity {input:?} has an unknown suffix {suffix:?} (expected one of Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or e<exponent>)"
    )]
    UnknownSuffix {
        /// The rejected string.
        input: String,
        /// The part after the number.
        suffix: String,
    },
    /// The number has no digit at all where one is required.
    #[error("quantity {input:?} has no numeric part")]
    Numeric {
        /// The rejected string.
        input: String,
    },
}

/// How a quantity is written back out; remembered from the parsed suffix, as apimachinery does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Powers of 1024: `Ki`, `Mi`, ... `Ei` (e.g. `12Mi`).
    BinarySi,
    /// Powers of 1000: `n`, `u`, `m`, none, `k`, `M`, ... `E` (e.g. `12M`).
    DecimalSi,
    /// A decimal exponent (e.g. `12e6`).
    DecimalExponent,
}

/// An exact `resource.Quantity`.
///
/// Equality, ordering and hashing look at the value only, never at the [`Format`]:
/// `1Gi == 1024Mi == 1073741824`.
#[derive(Clone)]
pub struct Quantity {
    negative: bool,
    /// Decimal digits (values 0..=9), most significant first, with no leading and no trailing
    /// zeros; empty for zero.
    digits: Vec<u8>,
    /// The value is `±digits × 10^exponent`; 0 for zero, never below -9 after parsing.
    exponent: i64,
    format: Format,
}

/// Parsing never keeps a digit finer than this power of ten (nano).
const MIN_EXPONENT: i64 = -9;
/// apimachinery caps binary-suffixed values at the largest int64.
const BINARY_CAP: u64 = i64::MAX as u64;

impl Quantity {
    /// Parses `s` exactly as apimachinery's `ParseQuantity` does.
    ///
    /// ```
    /// use provisioner_core::quantity::{Quantity, QuantityError};
    ///
    /// assert_eq!(Quantity::parse("1Ki")?, Quantity::parse("1024")?);
    /// assert!(matches!(Quantity::parse("1K"), Err(QuantityError::UnknownSuffix { .. })));
    /// # Ok::<(), QuantityError>(())
    /// ```
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        if s == "0" {
            return Ok(Quantity::zero());
        }
        let scanned = scan(s.as_bytes()).ok_or_else(|| QuantityError::Malformed {
            input: s.to_owned(),
        })?;
        let (base, exponent, format) =
            interpret_suffix(scanned.suffix).ok_or_else(|| QuantityError::UnknownSuffix {
                input: s.to_owned(),
                suffix: String::from_utf8_lossy(scanned.suffix).into_owned(),
            })?;
        // apimachinery falls back to a big-decimal parse of the literal text when the value
        // does not fit its int64 fast path; that parse needs at least one digit.
        if !scanned.has_digit && !fits_fast_path(&scanned, base, exponent) {
            return Err(QuantityError::Numeric {
                input: s.to_owned(),
            });
        }
        let mut digits: Vec<u8> = scanned
            .num
            .iter()
            .chain(scanned.denom)
            .map(|b| b - b'0')
            .collect();
        let mut decimal_exponent = -(scanned.denom.len() as i64);
        match base {
            Base::Ten => decimal_exponent += i64::from(exponent),
            Base::Two => {
                for _ in 0..exponent / 10 {
                    multiply_small(&mut digits, 1024);
                }
            }
        }
        let mut q = Quantity {
            negative: !scanned.positive,
            digits,
            exponent: decimal_exponent,
            format,
        };
        q.normalize();
        q.round_up_to_nano();
        if format == Format::BinarySi {
            if compare_magnitude(&q, &Quantity::from_u64(BINARY_CAP)) == Ordering::Greater {
                let negative = q.negative;
                q = Quantity::from_u64(BINARY_CAP);
                q.negative = negative;
                q.format = Format::BinarySi;
            }
            if !q.is_zero() && compare_magnitude(&q, &Quantity::from_u64(1)) == Ordering::Less {
                q.format = Format::DecimalSi;
            }
        }
        Ok(q)
    }

    /// Zero (`"0"`).
    pub fn zero() -> Quantity {
        Quantity {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
            format: Format::DecimalSi,
        }
    }

    /// A whole number of units, written in decimal SI form.
    pub fn from_u64(value: u64) -> Quantity {
        let mut q = Quantity {
            negative: false,
            digits: value.to_string().bytes().map(|b| b - b'0').collect(),
            exponent: 0,
            format: Format::DecimalSi,
        };
        q.normalize();
        q
    }

    /// The same value, written with `format` by [`Display`](fmt::Display).
    pub fn with_format(mut self, format: Format) -> Quantity {
        self.format = format;
        self
    }

    /// The format [`Display`](fmt::Display) uses.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// apimachinery's `Value()`: the value rounded up (away from zero) to whole units.
    ///
    /// Unlike Go's int64 result this never overflows: it saturates at the `i128` bounds,
    /// which only quantities beyond about 10^38 reach.
    pub fn ceil_value(&self) -> i128 {
        let mut magnitude: i128 = 0;
        let mut saturated = false;
        let integer_len = self.digits.len() as i64 + self.exponent;
        for i in 0..integer_len.max(0) {
            let digit = usize::try_from(i)
                .ok()
                .and_then(|i| self.digits.get(i))
                .copied()
                .unwrap_or(0);
            match magnitude
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(digit)))
            {
                Some(m) => magnitude = m,
                None => {
                    saturated = true;
                    break;
                }
            }
        }
        let has_fraction = self.exponent < 0 && integer_len < self.digits.len() as i64;
        if saturated {
            return if self.negative { i128::MIN } else { i128::MAX };
        }
        if has_fraction {
            magnitude = magnitude.saturating_add(1);
        }
        if self.negative { -magnitude } else { magnitude }
    }

    fn normalize(&mut self) {
        let leading = self.digits.iter().take_while(|&&d| d == 0).count();
        self.digits.drain(..leading);
        let trailing = self.digits.iter().rev().take_while(|&&d| d == 0).count();
        self.digits.truncate(self.digits.len() - trailing);
        self.exponent += trailing as i64;
        if self.digits.is_empty() {
            self.exponent = 0;
            self.negative = false;
        }
    }

    /// Rounds a value finer than a nanounit away from zero to the next nanounit.
    fn round_up_to_nano(&mut self) {
        if self.is_zero() || self.exponent >= MIN_EXPONENT {
            return;
        }
        let dropped = usize::try_from(MIN_EXPONENT - self.exponent).unwrap_or(usize::MAX);
        // Normalized digits end in a non-zero digit, so something non-zero is always dropped.
        let kept = self.digits.len().saturating_sub(dropped);
        self.digits.truncate(kept);
        self.exponent = MIN_EXPONENT;
        increment(&mut self.digits);
        self.normalize();
    }

    /// The value rounded up (away from zero) to whole units, and whether that was exact.
    fn integer_digits(&self) -> (Vec<u8>, bool) {
        if self.exponent >= 0 {
            let mut digits = self.digits.clone();
            digits.extend(std::iter::repeat_n(0, self.exponent as usize));
            return (digits, true);
        }
        let fraction = (-self.exponent) as usize;
        let kept = self.digits.len().saturating_sub(fraction);
        let mut digits = self.digits[..kept].to_vec();
        increment(&mut digits);
        (digits, false)
    }
}

impl Default for Quantity {
    fn default() -> Self {
        Quantity::zero()
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl TryFrom<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> for Quantity {
    type Error = QuantityError;

    fn try_from(
        value: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    ) -> Result<Self, Self::Error> {
        Quantity::parse(&value.0)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The representation is normalized, so equal values have equal fields.
        self.negative.hash(state);
        self.digits.hash(state);
        self.exponent.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => compare_magnitude(self, other),
            (true, true) => compare_magnitude(other, self),
        }
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quantity({self})")
    }
}

/// The canonical form apimachinery serializes: no fractional digits, the largest suffix that
/// loses no precision, in the quantity's own [`Format`]. It parses back to the same value.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        if self.negative {
            f.write_str("-")?;
        }
        // Parsing caps binary values at 2^63-1; a larger one (only reachable through
        // `with_format`) is written in decimal rather than spelled out digit by digit.
        if self.format == Format::BinarySi
            && compare_magnitude(self, &Quantity::from_u64(1024)) != Ordering::Less
            && compare_magnitude(self, &Quantity::from_u64(BINARY_CAP)) != Ordering::Greater
        {
            let (mut integer, exact) = self.integer_digits();
            if exact {
                let mut power = 0;
                // Ei is the largest binary suffix; parsed values never need more.
                while power < 6 && remainder_small(&integer, 1024) == 0 {
                    divide_small(&mut integer, 1024);
                    power += 1;
                }
                write_digits(f, &integer)?;
                return f.write_str(["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power]);
            }
        }
        // Decimal: move the exponent down to a multiple of three, padding the mantissa.
        let exponent3 = self.exponent - self.exponent.rem_euclid(3);
        write_digits(f, &self.digits)?;
        for _ in exponent3..self.exponent {
            f.write_str("0")?;
        }
        let decimal_suffix = match exponent3 {
            -9 => Some("n"),
            -6 => Some("u"),
            -3 => Some("m"),
            0 => Some(""),
            3 => Some("k"),
            6 => Some("M"),
            9 => Some("G"),
            12 => Some("T"),
            15 => Some("P"),
            18 => Some("E"),
            _ => None,
        };
        match (self.format, decimal_suffix) {
            (Format::DecimalExponent, _) if exponent3 == 0 => Ok(()),
            (Format::DecimalExponent, _) | (_, None) => write!(f, "e{exponent3}"),
            (_, Some(suffix)) => f.write_str(suffix),
        }
    }
}

fn write_digits(f: &mut fmt::Formatter<'_>, digits: &[u8]) -> fmt::Result {
    for d in digits {
        fmt::Write::write_char(f, char::from(b'0' + d))?;
    }
    Ok(())
}

/// Compares absolute values.
fn compare_magnitude(a: &Quantity, b: &Quantity) -> Ordering {
    match (a.is_zero(), b.is_zero()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        (false, false) => {}
    }
    // The position of the leading digit decides, unless it is the same for both.
    let a_top = a.digits.len() as i64 + a.exponent;
    let b_top = b.digits.len() as i64 + b.exponent;
    a_top.cmp(&b_top).then_with(|| {
        // Same magnitude order: compare digit by digit; with no trailing zeros, the one with
        // more digits left over is the larger.
        a.digits.cmp(&b.digits)
    })
}

fn multiply_small(digits: &mut Vec<u8>, factor: u32) {
    let mut carry: u64 = 0;
    for d in digits.iter_mut().rev() {
        let t = u64::from(*d) * u64::from(factor) + carry;
        *d = (t % 10) as u8;
        carry = t / 10;
    }
    while carry > 0 {
        digits.insert(0, (carry % 10) as u8);
        carry /= 10;
    }
}

fn remainder_small(digits: &[u8], divisor: u32) -> u32 {
    digits
        .iter()
        .fold(0u64, |r, &d| (r * 10 + u64::from(d)) % u64::from(divisor)) as u32
}

fn divide_small(digits: &mut Vec<u8>, divisor: u32) {
    let mut rest: u64 = 0;
    for d in digits.iter_mut() {
        let t = rest * 10 + u64::from(*d);
        *d = (t / u64::from(divisor)) as u8;
        rest = t % u64::from(divisor);
    }
    let leading = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..leading);
}

/// Adds one to a digit string (an empty string is zero).
fn increment(digits: &mut Vec<u8>) {
    for d in digits.iter_mut().rev() {
        if *d == 9 {
            *d = 0;
        } else {
            *d += 1;
            return;
        }
    }
    digits.insert(0, 1);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    Two,
    Ten,
}

/// The parts of a quantity string, split the way apimachinery's scanner splits them.
struct Scanned<'a> {
    positive: bool,
    /// Integer digits without leading zeros (may be empty: zero).
    num: &'a [u8],
    /// Fraction digits (may be empty).
    denom: &'a [u8],
    suffix: &'a [u8],
    /// Whether the literal number (before the suffix) contains any digit.
    has_digit: bool,
}

/// apimachinery's `parseQuantityString`: sign, digits, optional `.digits`, then suffix letters,
/// an optional sign and digits. Returns `None` where it reports `ErrFormatWrong`.
fn scan(s: &[u8]) -> Option<Scanned<'_>> {
    let end = s.len();
    let mut pos = 0;
    let mut positive = true;
    match s.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    let literal_start = pos;
    while pos < end && s[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        // Only a sign and zeros: zero.
        return Some(Scanned {
            positive,
            num: &[],
            denom: &[],
            suffix: &[],
            has_digit: pos > literal_start,
        });
    }
    let num_start = pos;
    while pos < end && s[pos].is_ascii_digit() {
        pos += 1;
    }
    let num = &s[num_start..pos];
    let mut denom: &[u8] = &[];
    if pos < end && s[pos] == b'.' {
        pos += 1;
        let denom_start = pos;
        while pos < end && s[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[denom_start..pos];
    }
    let has_digit = s[literal_start..pos].iter().any(u8::is_ascii_digit);
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&s[pos]) {
        pos += 1;
    }
    if pos < end && (s[pos] == b'-' || s[pos] == b'+') {
        pos += 1;
    }
    while pos < end && s[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return None;
    }
    Some(Scanned {
        positive,
        num,
        denom,
        suffix: &s[suffix_start..],
        has_digit,
    })
}

/// apimachinery's suffix table: `(base, exponent, format)`.
fn interpret_suffix(suffix: &[u8]) -> Option<(Base, i32, Format)> {
    let decimal = |e| Some((Base::Ten, e, Format::DecimalSi));
    let binary = |e| Some((Base::Two, e, Format::BinarySi));
    match suffix {
        b"" => decimal(0),
        b"n" => decimal(-9),
        b"u" => decimal(-6),
        b"m" => decimal(-3),
        b"k" => decimal(3),
        b"M" => decimal(6),
        b"G" => decimal(9),
        b"T" => decimal(12),
        b"P" => decimal(15),
        b"E" => decimal(18),
        b"Ki" => binary(10),
        b"Mi" => binary(20),
        b"Gi" => binary(30),
        b"Ti" => binary(40),
        b"Pi" => binary(50),
        b"Ei" => binary(60),
        [b'e' | b'E', rest @ ..] if !rest.is_empty() => {
            let parsed: i64 = std::str::from_utf8(rest).ok()?.parse().ok()?;
            // Go stores the exponent as int32 and truncates larger values the same way.
            Some((Base::Ten, parsed as i32, Format::DecimalExponent))
        }
        _ => None,
    }
}

/// Whether apimachinery would take its int64 fast path, which never looks at the literal text
/// and so accepts a number with no digits (`.`, `Ki`).
fn fits_fast_path(scanned: &Scanned<'_>, base: Base, exponent: i32) -> bool {
    // `num` is reported as "0" when empty, so it always counts as at least one digit.
    let num_len = scanned.num.len().max(1) as i64;
    let denom_len = scanned.denom.len() as i64;
    match base {
        Base::Ten => {
            let precision = 18 - num_len - denom_len;
            precision >= 0 && i64::from(exponent) - denom_len >= MIN_EXPONENT
        }
        Base::Two => {
            let precision = 15 - num_len - i64::from(exponent) * 3 / 10 - 1;
            denom_len == 0 && precision >= 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn binary_decimal_and_exponent_suffixes() {
        assert_eq!(q("1Ki"), Quantity::from_u64(1024));
        assert_eq!(q("7Mi"), Quantity::from_u64(7 << 20));
        assert_eq!(q("6Gi"), Quantity::from_u64(6 << 30));
        assert_eq!(q("5Ti"), Quantity::from_u64(5 << 40));
        assert_eq!(q("4Pi"), Quantity::from_u64(4 << 50));
        assert_eq!(q("3Ei"), Quantity::from_u64(3 << 60));
        assert_eq!(q("8k"), Quantity::from_u64(8_000));
        assert_eq!(q("7M"), Quantity::from_u64(7_000_000));
        assert_eq!(q("6G"), Quantity::from_u64(6_000_000_000));
        assert_eq!(q("5T"), Quantity::from_u64(5_000_000_000_000));
        assert_eq!(q("2P"), Quantity::from_u64(2_000_000_000_000_000));
        assert_eq!(q("1E"), Quantity::from_u64(1_000_000_000_000_000_000));
        assert_eq!(q("1e9"), q("1G"));
        assert_eq!(q("1E3"), q("1k"));
        assert_eq!(q("1.3E+6"), q("1300k"));
        assert_eq!(q("1E-3"), q("1m"));
        assert_eq!(q("5n").to_string(), "5n");
        assert_eq!(q("4u").to_string(), "4u");
        assert_eq!(q("3m").to_string(), "3m");
    }

    #[test]
    fn comparison_is_exact() {
        assert!(q("1G") < q("1000Mi"));
        assert!(q("1000Mi") < q("1Gi"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
        assert!(q("800E") < q("950E"));
        assert!(q("10000T") > q("100Gi"));
        assert!(q("100m") > q("50m"));
        assert!(q("-1") < q("0"));
        assert!(q("-2") < q("-1"));
        assert_eq!(q("0"), q("-0"));
        assert_eq!(q("0Ki"), Quantity::zero());
        assert!(q("18446744073709551616") > q("18446744073709551615"));
        assert!(q("1e30") > q("999999999999999999999999999999"));
    }

    #[test]
    fn fractions_round_up_to_nano() {
        assert_eq!(q("3.001n"), q("4n"));
        assert_eq!(q("1.1E-9"), q("2n"));
        assert_eq!(q("0.0000000001"), q("1n"));
        assert_eq!(q("0.9n"), q("1n"));
        assert_eq!(q("0.00000012345"), q("124n"));
        assert_eq!(q("-0.9n"), q("-1n"));
        assert_eq!(q("100.035k"), Quantity::from_u64(100_035));
        assert_eq!(q("0.5Mi"), Quantity::from_u64(512 * 1024));
        assert_eq!(q("0.000000000001Ki").to_string(), "2n");
    }

    #[test]
    fn binary_values_are_capped_at_max_int64() {
        assert_eq!(q("9Ei"), Quantity::from_u64(i64::MAX as u64));
        assert_eq!(
            q("9223372036854775807Ki"),
            Quantity::from_u64(i64::MAX as u64)
        );
        assert_eq!(q("7Ei"), Quantity::from_u64(7 << 60));
        // Decimal values are not capped.
        assert!(q("12E") > q("9Ei"));
    }

    #[test]
    fn canonical_formatting() {
        let cases = [
            ("1024Mi", "1Gi"),
            ("1000M", "1G"),
            ("1.5", "1500m"),
            ("1.5Gi", "1536Mi"),
            (".001Ki", "1024m"),
            (".000001Ki", "1024u"),
            (".000000001Ki", "1024n"),
            ("100.035Ki", "102435840m"),
            ("1025Ki", "1025Ki"),
            ("5Ki", "5Ki"),
            ("1E", "1E"),
            ("1000E", "1e21"),
            ("1e9", "1e9"),
            ("1e-3", "1e-3"),
            ("80e-3", "80e-3"),
            ("0.5e0", "500e-3"),
            ("1.08", "1080m"),
            ("1234567M", "1234567M"),
            ("-1Gi", "-1Gi"),
            ("-1.5", "-1500m"),
            ("0Gi", "0"),
            ("-0", "0"),
            ("1.", "1"),
            ("1.G", "1G"),
            (".", "0"),
            ("+5", "5"),
            ("1e2147483647", "10e2147483646"),
        ];
        for (input, canonical) in cases {
            assert_eq!(q(input).to_string(), canonical, "{input}");
            assert_eq!(q(canonical), q(input), "{input} round trip");
        }
    }

    #[test]
    fn numbers_without_digits_follow_apimachinery() {
        // The int64 fast path never reads the literal, so these are zero...
        for zero in ["-", "+", ".", "-.", "Ki", "Ti", "k", "e3"] {
            assert_eq!(q(zero), Quantity::zero(), "{zero}");
        }
        // ...while the big-decimal path needs a digit.
        for no_digit in ["Pi", "Ei", "e-20", ".e-20"] {
            assert!(
                matches!(
                    Quantity::parse(no_digit),
                    Err(QuantityError::Numeric { .. })
                ),
                "{no_digit}"
            );
        }
        assert_eq!(q("0.e-20"), Quantity::zero());
    }

    #[test]
    fn binary_format_of_huge_values_falls_back_to_decimal() {
        let huge = q("1e30").with_format(Format::BinarySi);
        assert_eq!(huge.to_string(), "1e30");
        assert_eq!(q("2048").with_format(Format::BinarySi).to_string(), "2Ki");
    }

    #[test]
    fn invalid_strings_are_typed_errors() {
        assert_eq!(Quantity::parse(""), Err(QuantityError::Empty));
        for bad in [
            "1K", "0.1mi", ".5i", "1i", "-3.01i", "-3.01e-", "1ee3", "1Ki3",
        ] {
            assert!(
                matches!(
                    Quantity::parse(bad),
                    Err(QuantityError::UnknownSuffix { .. })
                ),
                "{bad}"
            );
        }
        for bad in [
            "1.1.M",
            "1+1.0M",
            "0.1am",
            "aoeu",
            " 1",
            "1 ",
            "1e3e",
            "10 Gi",
            "Non-Numeric",
            "1Kib",
        ] {
            assert!(
                matches!(Quantity::parse(bad), Err(QuantityError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn ceil_value_rounds_away_from_zero_and_saturates() {
        assert_eq!(q("1Gi").ceil_value(), 1 << 30);
        assert_eq!(q("1500m").ceil_value(), 2);
        assert_eq!(q("1n").ceil_value(), 1);
        assert_eq!(q("-1.5").ceil_value(), -2);
        assert_eq!(q("800E").ceil_value(), 800 * 10i128.pow(18));
        assert_eq!(q("1e40").ceil_value(), i128::MAX);
        assert_eq!(q("-1e40").ceil_value(), i128::MIN);
        assert_eq!(Quantity::zero().ceil_value(), 0);
    }
}
